//! Metric names for axes and titles.

/// The axis label of a metric: its name with its formula, e.g. `NC1 = Tr(Σ_W Σ_B†)/C` for
/// `nc1` (names as in [`NcReport::metrics`](crate::metrics::NcReport::metrics); `accuracy` for probes). Unknown names are returned
/// unchanged.
///
/// ```
/// assert_eq!(neural_collapse::plot::metric_label("nc1"), "NC1 = Tr(Σ_W Σ_B†)/C");
/// assert_eq!(neural_collapse::plot::metric_label("my_metric"), "my_metric");
/// ```
pub fn metric_label(metric: &str) -> String {
    let (base, w) = match metric.strip_suffix("_w") {
        Some(b) if b.starts_with("nc2_") => (b, true),
        _ => (metric, false),
    };
    let (v, vp) = if w {
        ("w_c", "w_c′")
    } else {
        ("μ_c − μ_G", "μ_c′ − μ_G")
    };
    let s = match base {
        "nc1" => "NC1 = Tr(Σ_W Σ_B†)/C".to_string(),
        "nc1_trace_ratio" => "NC1 trace ratio = Tr Σ_W / Tr Σ_B".to_string(),
        "cdnv" => "CDNV = mean (σ²_c + σ²_c′) / (2‖μ_c − μ_c′‖²)".to_string(),
        "nc2_equinorm" => format!("NC2 equinorm = std ‖{v}‖ / mean ‖{v}‖"),
        "nc2_equiangularity" => format!("NC2 equiangularity = std cos({v}, {vp})"),
        "nc2_max_angle" => format!("NC2 max-angle = mean |cos({v}, {vp}) + 1/(C−1)|"),
        "nc2_etf_distance" => {
            if w {
                "NC2 ETF distance of W = ‖G/‖G‖_F − ETF‖_F".to_string()
            } else {
                "NC2 ETF distance = ‖G/‖G‖_F − ETF‖_F".to_string()
            }
        }
        "nc3" => "NC3 = ‖Wᵀ/‖W‖_F − M/‖M‖_F‖²_F".to_string(),
        "nc4" => "NC4 = P(argmax (Wh + b) ≠ nearest class mean)".to_string(),
        "accuracy" => "probe accuracy".to_string(),
        "error" => "error rate".to_string(),
        _ => metric.to_string(),
    };
    s
}

/// A short name for titles: `NC1`, `NC2 equinorm (W)`, `probe accuracy`, …
pub(super) fn metric_short(metric: &str) -> String {
    let (base, w) = match metric.strip_suffix("_w") {
        Some(b) if b.starts_with("nc2_") => (b, true),
        _ => (metric, false),
    };
    let s = match base {
        "nc1" => "NC1",
        "nc1_trace_ratio" => "NC1 trace ratio",
        "cdnv" => "CDNV",
        "nc2_equinorm" => "NC2 equinorm",
        "nc2_equiangularity" => "NC2 equiangularity",
        "nc2_max_angle" => "NC2 max-angle",
        "nc2_etf_distance" => "NC2 ETF distance",
        "nc3" => "NC3",
        "nc4" => "NC4",
        "accuracy" => "Probe accuracy",
        "error" => "Error rate",
        other => return other.to_string(),
    };
    if w {
        format!("{s} (classifier rows)")
    } else {
        s.to_string()
    }
}
