//! Figures: each renders to an SVG with its title, axis labels and the expected series; PNGs
//! decode at the requested size and show text; bad input gives typed errors.

use ndarray::{array, Array1, Array2};
use neural_collapse::display::Table;
use neural_collapse::plot::{PlotError, TidyRow};
use neural_collapse::prelude::*;
use polars::prelude::*;

/// Text contents of the SVG's `<text>` elements.
fn svg_texts(svg: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = svg;
    while let Some(i) = rest.find("<text") {
        let after = &rest[i..];
        let Some(open_end) = after.find('>') else {
            break;
        };
        let Some(close) = after.find("</text>") else {
            break;
        };
        let raw = after[open_end + 1..close].trim();
        out.push(
            raw.replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&"),
        );
        rest = &after[close..];
    }
    out
}

fn has_text(svg: &str, text: &str) -> bool {
    svg_texts(svg).iter().any(|t| t == text)
}

/// Polylines of stroke width 2: series lines and legend samples (grid lines are thinner).
fn wide_polylines(svg: &str) -> usize {
    svg.split("<polyline")
        .skip(1)
        .filter(|p| p[..p.find("/>").unwrap_or(p.len())].contains("stroke-width=\"2\""))
        .count()
}

/// A tidy NC table: `layers` × epochs {0, 1, 2, 5, 10, 20, 50, 100} × splits, decreasing NC1.
fn nc_table(layers: &[&str], splits: &[&str]) -> DataFrame {
    let epochs = [0u32, 1, 2, 5, 10, 20, 50, 100];
    let (mut e, mut s, mut l, mut m, mut v) = (vec![], vec![], vec![], vec![], vec![]);
    for (li, layer) in layers.iter().enumerate() {
        for (si, split) in splits.iter().enumerate() {
            for &epoch in &epochs {
                for metric in ["nc1", "nc2_etf_distance", "nc3", "nc4"] {
                    let value = match metric {
                        "nc4" => {
                            if epoch >= 20 {
                                0.0
                            } else {
                                0.3 / (epoch as f64 + 1.0)
                            }
                        }
                        _ => {
                            (1.0 + si as f64)
                                * 10f64
                                    .powf(-(epoch as f64 + 1.0).log10() * (li as f64 + 1.0) / 2.0)
                        }
                    };
                    e.push(epoch);
                    s.push(*split);
                    l.push(*layer);
                    m.push(metric);
                    v.push(value);
                }
            }
        }
    }
    df!("epoch" => e, "split" => s, "layer" => l, "metric" => m, "value" => v).unwrap()
}

fn probe_table(layers: &[&str]) -> DataFrame {
    let epochs = [0u32, 1, 2, 5, 10, 20, 50, 100];
    let (mut e, mut l, mut p, mut s, mut m, mut v) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for (li, layer) in layers.iter().enumerate() {
        for &epoch in &epochs {
            for split in ["train", "test"] {
                e.push(epoch);
                l.push(*layer);
                p.push("least-squares/label");
                s.push(split);
                m.push("accuracy");
                let base = 0.5 + 0.4 * (1.0 - 1.0 / (epoch as f64 + 1.0)) - 0.05 * li as f64;
                v.push(if split == "train" { base + 0.05 } else { base });
            }
        }
    }
    df!("epoch" => e, "layer" => l, "probe" => p, "split" => s, "metric" => m, "value" => v)
        .unwrap()
}

#[test]
fn epoch_plot_has_title_axis_labels_and_one_line_per_series() {
    let tidy = nc_table(&["fc1", "fc2", "fc3"], &["train"]);
    let fig = EpochPlot::new(&tidy)
        .metric("nc1")
        .title("NC1 of three layers")
        .draw()
        .unwrap();
    let svg = fig.svg();
    assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
    assert!(has_text(svg, "NC1 of three layers"));
    assert!(has_text(svg, "NC1 = Tr(Σ_W Σ_B†)/C (log scale)"));
    assert!(has_text(svg, "epoch (log scale of epoch + 1)"));
    // One legend entry and one solid line per layer (3 series + 3 legend samples).
    assert_eq!(fig.legend(), ["fc1", "fc2", "fc3"]);
    for l in ["fc1", "fc2", "fc3"] {
        assert!(has_text(svg, l), "legend entry {l}");
    }
    assert_eq!(wide_polylines(svg), 6, "3 series + 3 legend samples");
    // Epoch 0 is on the axis; log-y ticks are powers of ten.
    assert!(has_text(svg, "0") && has_text(svg, "100"));
    assert!(has_text(svg, "1") && has_text(svg, "0.1"));
}

#[test]
fn epoch_plot_train_solid_test_dashed_with_marker() {
    let tidy = nc_table(&["fc2"], &["train", "test"]);
    let fig = EpochPlot::new(&tidy)
        .metric("nc1")
        .x_axis(EpochAxis::Linear)
        .marker(20, "train error = 0")
        .draw()
        .unwrap();
    assert_eq!(
        fig.legend(),
        ["train", "test", "train error = 0 (epoch 20)"]
    );
    let svg = fig.svg();
    assert!(has_text(svg, "epoch"));
    assert!(has_text(svg, "NC1 vs epoch"));
    // Train: one solid line + its legend sample; test is dashed: many short polylines.
    let n = wide_polylines(svg);
    assert!(n > 2 + 10, "{n} polylines");
}

#[test]
fn epoch_plot_factorises_the_legend_for_layers_and_splits() {
    let tidy = nc_table(&["a", "b"], &["train", "test"]);
    let fig = EpochPlot::new(&tidy).metric("nc3").draw().unwrap();
    assert_eq!(fig.legend(), ["a", "b", "train", "test"]);
    assert!(has_text(
        fig.svg(),
        "NC3 = ‖Wᵀ/‖W‖_F − M/‖M‖_F‖²_F (log scale)"
    ));
}

#[test]
fn epoch_plot_accepts_reports() {
    let x = array![
        [1.0f32, 0.1],
        [0.9, -0.1],
        [-1.0, 0.1],
        [-1.1, -0.1],
        [0.0, 1.0],
        [0.1, 1.1]
    ];
    let y = [0u32, 0, 1, 1, 2, 2];
    let reports: Vec<NcReport> = (0..3)
        .map(|e| {
            let f = Features::new(x.mapv(|v| v * (e as f32 + 1.0)), y.to_vec())
                .with_epoch(e)
                .with_split("train")
                .with_layer("fc");
            NcParams::new().measure_features(&f).unwrap()
        })
        .collect();
    let fig = EpochPlot::new(&reports).metric("cdnv").draw().unwrap();
    assert!(has_text(fig.svg(), "CDNV vs epoch — train split"));
    assert_eq!(fig.legend(), ["train"]);
}

#[test]
fn probe_accuracy_plot() {
    let tidy = probe_table(&["fc1", "fc2"]);
    let fig = EpochPlot::probe_accuracy(&tidy)
        .reference_line(0.1, "chance")
        .draw()
        .unwrap();
    let svg = fig.svg();
    assert!(has_text(svg, "Linear-probe accuracy vs epoch"));
    assert!(
        has_text(svg, "probe accuracy"),
        "linear axis: no log-scale suffix"
    );
    assert_eq!(fig.legend(), ["fc1", "fc2", "train", "test", "chance"]);
}

#[test]
fn layer_plot_keeps_layer_order_and_colours_epochs() {
    let tidy = nc_table(&["layer2", "layer10", "head"], &["train", "test"]);
    let fig = LayerPlot::new(&tidy)
        .metric("nc1")
        .split("train")
        .max_epochs(4)
        .draw()
        .unwrap();
    let svg = fig.svg();
    let texts = svg_texts(svg);
    let pos = |t: &str| texts.iter().position(|x| x == t).unwrap();
    assert!(pos("layer2") < pos("layer10") && pos("layer10") < pos("head"));
    assert_eq!(fig.legend().len(), 4);
    assert_eq!(fig.legend()[0], "epoch 0");
    assert_eq!(fig.legend()[3], "epoch 100");
    assert!(has_text(svg, "layer (network order)"));
    assert_eq!(wide_polylines(svg), 8, "4 epochs + 4 legend samples");
    // Both splits: epochs by colour, splits by dash.
    let both = LayerPlot::new(&tidy)
        .metric("nc1")
        .epochs(&[0, 100])
        .draw()
        .unwrap();
    assert_eq!(both.legend(), ["epoch 0", "epoch 100", "train", "test"]);
}

#[test]
fn heat_map_has_a_cell_per_layer_and_epoch_and_a_colour_bar() {
    let tidy = nc_table(&["l1", "l2", "l3"], &["train"]);
    let fig = HeatMap::new(&tidy).metric("nc1").draw().unwrap();
    let svg = fig.svg();
    assert!(has_text(svg, "NC1 by layer and epoch — train split"));
    assert!(has_text(svg, "NC1 (log scale)"), "colour bar label");
    assert!(has_text(svg, "layer") && has_text(svg, "epoch"));
    // 3 × 8 cells + 96 colour-bar strips (+ the background).
    let rects = svg.matches("<rect").count();
    assert!(rects >= 24 + 96, "{rects} rects");
    assert!(fig.legend().is_empty());
    // Several splits: the heat map needs one.
    let two = nc_table(&["l1"], &["train", "test"]);
    match HeatMap::new(&two).draw() {
        Err(PlotError::Ambiguous { column, values }) => {
            assert_eq!(column, "split");
            assert_eq!(values, "train, test");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn nc1_vs_accuracy_scatter() {
    let nc = nc_table(&["fc1", "fc2"], &["train", "test"]);
    let probe = probe_table(&["fc1", "fc2"]);
    let fig = Nc1AccuracyPlot::new(&nc, &probe).draw().unwrap();
    let svg = fig.svg();
    assert!(has_text(svg, "Probe accuracy vs NC1"));
    assert!(has_text(
        svg,
        "NC1 = Tr(Σ_W Σ_B†)/C on the train split (log scale)"
    ));
    assert!(has_text(svg, "probe accuracy on the test split"));
    assert_eq!(fig.legend(), ["fc1", "fc2"]);
    // fc1 uses circles (drawn filled, then outlined): 8 checkpoints + 1 legend sample.
    assert_eq!(svg.matches("<circle").count(), 2 * (8 + 1));
    // No common checkpoint: a typed error.
    let other = probe_table(&["conv"]);
    assert!(matches!(
        Nc1AccuracyPlot::new(&nc, &other).draw(),
        Err(PlotError::NoData { .. })
    ));
}

fn etf_features() -> (Features, Classifier) {
    // Three classes at the vertices of a triangle (a simplex ETF), two samples each.
    let x = array![
        [1.1f32, 0.0, 0.0],
        [0.9, 0.0, 0.0],
        [-0.5, 0.9660254, 0.0],
        [-0.5, 0.7660254, 0.0],
        [-0.5, -0.7660254, 0.0],
        [-0.5, -0.9660254, 0.0]
    ];
    let f = Features::new(x, vec![0, 0, 1, 1, 2, 2])
        .with_layer("fc")
        .with_epoch(9)
        .with_split("train");
    let w = array![
        [2.0, 0.0, 0.0],
        [-1.0, 1.7320508, 0.0],
        [-1.0, -1.7320508, 0.0]
    ];
    (
        f,
        Classifier {
            w,
            b: Array1::zeros(3),
        },
    )
}

#[test]
fn mean_geometry_of_a_simplex() {
    let (f, w) = etf_features();
    let fig = MeanGeometryPlot::from_features(&f)
        .classifier(&w)
        .samples(4, 1)
        .class_names(&["zero", "one", "two"])
        .draw()
        .unwrap();
    let svg = fig.svg();
    assert!(has_text(
        svg,
        "Class-mean geometry — layer fc, epoch 9, train split"
    ));
    assert!(has_text(
        svg,
        "C = 3: mean cos(μ_c − μ_G, μ_c′ − μ_G) = −0.5; simplex ETF: −1/(C−1) = −0.5"
    ));
    assert!(svg_texts(svg)
        .iter()
        .any(|t| t.starts_with("PC1 of the class means (")));
    for n in ["zero", "one", "two"] {
        assert!(has_text(svg, n));
    }
    assert_eq!(
        fig.legend(),
        [
            "class mean μ_c − μ_G",
            "classifier row w_c (rescaled)",
            "4 of 6 samples"
        ]
    );
    // The means of a triangle fill the plane.
    assert!(has_text(
        svg,
        "this plane holds 100% of ‖μ_c − μ_G‖² (a simplex ETF: 100%)"
    ));
    // Same seed, same figure; another seed, another subsample.
    let again = MeanGeometryPlot::from_features(&f)
        .samples(4, 1)
        .draw()
        .unwrap();
    let same = MeanGeometryPlot::from_features(&f)
        .samples(4, 1)
        .draw()
        .unwrap();
    let other = MeanGeometryPlot::from_features(&f)
        .samples(2, 5)
        .draw()
        .unwrap();
    assert_eq!(again.svg(), same.svg());
    assert_ne!(again.svg(), other.svg());
}

#[test]
fn mean_geometry_errors() {
    let (f, _) = etf_features();
    let bad = Classifier {
        w: Array2::zeros((3, 2)),
        b: Array1::zeros(3),
    };
    match MeanGeometryPlot::from_features(&f).classifier(&bad).draw() {
        Err(PlotError::Invalid(m)) => assert!(m.contains("3 × 2"), "{m}"),
        other => panic!("{other:?}"),
    }
    let stats = ClassStats::from_data(f.x.view(), &f.labels).unwrap();
    assert!(matches!(
        MeanGeometryPlot::new(&stats).samples(3, 0).draw(),
        Err(PlotError::Invalid(_))
    ));
    assert!(MeanGeometryPlot::new(&stats).draw().is_ok());
}

#[test]
fn small_multiples_nc1_to_nc4() {
    let tidy = nc_table(&["fc"], &["train", "test"]);
    let fig = SmallMultiples::nc_overview(&tidy)
        .marker(20, "train error = 0")
        .draw()
        .unwrap();
    let svg = fig.svg();
    assert!(has_text(svg, "Neural Collapse vs epoch"));
    for m in ["nc1", "nc2_etf_distance", "nc3", "nc4"] {
        assert!(has_text(svg, &metric_label(m)), "panel {m}");
    }
    // NC4 reaches 0: its panel is linear (Scale::Auto), the others log.
    assert!(has_text(svg, "NC4"));
    assert!(has_text(svg, "NC1 (log scale)"));
    assert_eq!(
        fig.legend(),
        ["train", "test", "train error = 0 (epoch 20)"]
    );
    assert_eq!((fig.width(), fig.height()), (440 * 2 + 190, 310 * 2 + 50));
    // With a log axis forced on NC4, its zeros are an error naming the point.
    match SmallMultiples::nc_overview(&tidy)
        .scale_for("nc4", Scale::Log)
        .draw()
    {
        Err(PlotError::NonPositive {
            metric,
            series,
            at,
            value,
        }) => {
            assert_eq!(
                (metric.as_str(), series.as_str(), at.as_str(), value),
                ("nc4", "train", "epoch 20", 0.0)
            );
        }
        other => panic!("{other:?}"),
    }
}

fn decode_png(path: &std::path::Path) -> (u32, u32, Vec<u8>) {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

#[test]
fn png_has_the_requested_size_and_shows_text() {
    let dir = tempfile::tempdir().unwrap();
    let tidy = nc_table(&["fc1", "fc2"], &["train", "test"]);
    let fig = EpochPlot::new(&tidy).size(640, 400).draw().unwrap();
    let path = dir.path().join("nc1.png");
    fig.save(&path).unwrap();
    let (w, h, px) = decode_png(&path);
    assert_eq!((w, h), (640, 400));
    let dark = |i: usize| px[3 * i] < 100 && px[3 * i + 1] < 100 && px[3 * i + 2] < 100;
    let non_white = (0..(w * h) as usize)
        .filter(|&i| px[3 * i..3 * i + 3] != [255, 255, 255])
        .count();
    assert!(
        non_white > (w * h) as usize / 50,
        "{non_white} non-white pixels"
    );
    // The title (dark text on white) sits in the top 36 rows, centred.
    let title_dark = (0..36usize)
        .flat_map(|y| (w as usize / 4..3 * w as usize / 4).map(move |x| y * w as usize + x))
        .filter(|&i| dark(i))
        .count();
    assert!(title_dark > 150, "title pixels: {title_dark}");
    // The legend text (right strip, below the title) is drawn too.
    let legend_dark = (40..200usize)
        .flat_map(|y| (w as usize - 100..w as usize).map(move |x| y * w as usize + x))
        .filter(|&i| dark(i))
        .count();
    assert!(legend_dark > 50, "legend pixels: {legend_dark}");

    // Scaled: twice the pixels.
    let big = dir.path().join("nc1@2x.png");
    fig.save_png_scaled(&big, 2.0).unwrap();
    assert_eq!(decode_png(&big).0, 1280);
    // In memory, the same size.
    let (rw, rh, rgb) = fig.to_rgb(1.0).unwrap();
    assert_eq!((rw, rh, rgb.len()), (640, 400, 640 * 400 * 3));
    // SVG file.
    let svg = dir.path().join("nc1.svg");
    fig.save(&svg).unwrap();
    assert_eq!(std::fs::read_to_string(&svg).unwrap(), fig.svg());
    assert!(matches!(
        fig.save(dir.path().join("nc1.jpg")),
        Err(PlotError::Save { .. })
    ));
}

#[test]
fn every_figure_renders_a_png() {
    let dir = tempfile::tempdir().unwrap();
    let nc = nc_table(&["fc1", "fc2"], &["train", "test"]);
    let probe = probe_table(&["fc1", "fc2"]);
    let (f, w) = etf_features();
    let figures = [
        EpochPlot::new(&nc).draw().unwrap(),
        LayerPlot::new(&nc).draw().unwrap(),
        HeatMap::new(&nc).split("test").draw().unwrap(),
        EpochPlot::probe_accuracy(&probe).draw().unwrap(),
        Nc1AccuracyPlot::new(&nc, &probe).draw().unwrap(),
        MeanGeometryPlot::from_features(&f)
            .classifier(&w)
            .draw()
            .unwrap(),
        SmallMultiples::nc_overview(&nc).draw().unwrap(),
    ];
    for (i, fig) in figures.iter().enumerate() {
        let path = dir.path().join(format!("{i}.png"));
        fig.save_png(&path).unwrap();
        let (pw, ph, px) = decode_png(&path);
        assert_eq!((pw, ph), (fig.width(), fig.height()), "figure {i}");
        let colours: std::collections::BTreeSet<&[u8]> = px.chunks(3).collect();
        assert!(
            colours.len() > 20,
            "figure {i} has {} colours",
            colours.len()
        );
    }
}

#[test]
fn bad_values_give_typed_errors() {
    // NaN.
    let nan = df!("epoch" => [0u32, 1, 2], "split" => ["train"; 3], "layer" => ["fc"; 3],
                  "metric" => ["nc1"; 3], "value" => [1.0, f64::NAN, 0.1])
    .unwrap();
    match EpochPlot::new(&nan).draw() {
        Err(PlotError::NonFinite {
            metric,
            series,
            at,
            value,
        }) => {
            assert_eq!(
                (metric.as_str(), series.as_str(), at.as_str()),
                ("nc1", "train", "epoch 1")
            );
            assert!(value.is_nan());
        }
        other => panic!("{other:?}"),
    }
    // Zero and negative values on a log axis; fine on a linear one.
    let zero = df!("epoch" => [0u32, 1], "split" => ["test"; 2], "metric" => ["nc4"; 2],
                   "value" => [0.5, 0.0])
    .unwrap();
    let err = EpochPlot::new(&zero).metric("nc4").draw().unwrap_err();
    assert!(matches!(err, PlotError::NonPositive { value, .. } if value == 0.0));
    assert!(
        err.to_string()
            .contains("nc4 of series test at epoch 1 is 0"),
        "{err}"
    );
    assert!(EpochPlot::new(&zero)
        .metric("nc4")
        .scale(Scale::Linear)
        .draw()
        .is_ok());
    assert!(EpochPlot::new(&zero)
        .metric("nc4")
        .scale(Scale::Auto)
        .draw()
        .is_ok());
    let neg = df!("epoch" => [0u32], "split" => ["train"], "layer" => ["fc"], "metric" => ["nc1"],
                  "value" => [-1.0])
    .unwrap();
    assert!(matches!(
        HeatMap::new(&neg).draw(),
        Err(PlotError::NonPositive { .. })
    ));
    assert!(matches!(
        LayerPlot::new(&neg).draw(),
        Err(PlotError::NonPositive { .. })
    ));
    // An unknown metric: nothing to draw, and the message lists what there is.
    let tidy = nc_table(&["fc"], &["train"]);
    match EpochPlot::new(&tidy).metric("nc9").draw() {
        Err(e @ PlotError::NoData { .. }) => {
            assert!(
                e.to_string()
                    .contains("metrics nc1, nc2_etf_distance, nc3, nc4"),
                "{e}"
            )
        }
        other => panic!("{other:?}"),
    }
    // A filter that leaves nothing.
    match EpochPlot::new(&tidy).layer("fc9").draw() {
        Err(e @ PlotError::NoData { .. }) => assert!(e.to_string().contains("layers fc"), "{e}"),
        other => panic!("{other:?}"),
    }
    // An empty table.
    let empty = df!("metric" => Vec::<String>::new(), "value" => Vec::<f64>::new()).unwrap();
    assert!(matches!(
        EpochPlot::new(&empty).draw(),
        Err(PlotError::NoData { .. })
    ));
    // Missing and ill-typed columns.
    let no_value = df!("metric" => ["nc1"]).unwrap();
    match EpochPlot::new(&no_value).draw() {
        Err(PlotError::MissingColumn { column, available }) => {
            assert_eq!((column.as_str(), available.as_str()), ("value", "metric"))
        }
        other => panic!("{other:?}"),
    }
    let text_value = df!("metric" => ["nc1"], "value" => ["big"]).unwrap();
    assert!(matches!(
        EpochPlot::new(&text_value).draw(),
        Err(PlotError::ColumnType { .. })
    ));
    // Two values for one point.
    let dup = df!("epoch" => [3u32, 3], "split" => ["train"; 2], "metric" => ["nc1"; 2],
                  "value" => [1.0, 2.0])
    .unwrap();
    assert!(matches!(
        EpochPlot::new(&dup).draw(),
        Err(PlotError::Duplicate { .. })
    ));
    // A row without epoch.
    let no_epoch = df!("split" => ["train"], "metric" => ["nc1"], "value" => [1.0]).unwrap();
    assert!(matches!(
        EpochPlot::new(&no_epoch).draw(),
        Err(PlotError::MissingValue {
            column: "epoch",
            ..
        })
    ));
    // Sizes.
    assert!(matches!(
        EpochPlot::new(&tidy).size(10, 10).draw(),
        Err(PlotError::BadSize {
            width: 10,
            height: 10
        })
    ));
    let fig = EpochPlot::new(&tidy).draw().unwrap();
    assert!(matches!(
        fig.to_rgb(f64::NAN),
        Err(PlotError::BadSize { .. })
    ));
    // Into the crate's error.
    let e: neural_collapse::Error = EpochPlot::new(&dup).draw().unwrap_err().into();
    assert!(matches!(
        e,
        neural_collapse::Error::Plot(PlotError::Duplicate { .. })
    ));
}

#[test]
fn terminal_phase_epoch() {
    let row = |epoch, value| TidyRow {
        run: None,
        epoch: Some(epoch),
        layer: None,
        probe: None,
        split: Some("train".into()),
        metric: "accuracy".into(),
        value,
        band: None,
    };
    let rows = vec![
        row(0, 0.5),
        row(10, 1.0),
        row(20, 0.99),
        row(30, 1.0),
        row(40, 1.0),
    ];
    assert_eq!(
        epoch_reaching(&rows, "accuracy", "train", 1.0, 1e-9).unwrap(),
        Some(30)
    );
    assert_eq!(
        epoch_reaching(&rows, "accuracy", "train", 1.0, 0.02).unwrap(),
        Some(10)
    );
    let never = vec![row(0, 0.5), row(10, 0.9)];
    assert_eq!(
        epoch_reaching(&never, "accuracy", "train", 1.0, 0.0).unwrap(),
        None
    );
    assert!(epoch_reaching(&rows, "accuracy", "test", 1.0, 0.0).is_err());
}

#[test]
fn report_tables_share_one_html_builder() {
    let x = array![[1.0f32, 0.1], [0.9, -0.1], [-1.0, 0.1], [-1.1, -0.1]];
    let report = NcParams::new().measure(x.view(), &[0, 0, 1, 1]).unwrap();
    let html = report.html_table().to_html();
    assert!(html.starts_with(
        "<table><caption style=\"text-align:left\">NC report — N=4 C=2 d=2; means: own"
    ));
    assert!(html.contains(&format!(
        "<tr><td style=\"text-align:left\"><code>nc1</code></td><td style=\"text-align:right\">{:.6e}</td></tr>",
        report.nc1
    )));
    assert!(html.ends_with("</table>"));

    let f = Features::new(x.clone(), vec![0, 0, 1, 1]);
    let probe = LinearProbe::least_squares()
        .fit(&f)
        .unwrap()
        .report(&f, &f)
        .unwrap();
    let html = probe.html_table().to_html();
    assert!(html.starts_with("<table><caption style=\"text-align:left\">probe — "));
    assert!(html.contains(
        "<tr><th style=\"text-align:left\">split</th><th style=\"text-align:right\">n</th><th style=\"text-align:right\">accuracy</th></tr>"
    ));
    assert!(html.contains(
        "<tr><td style=\"text-align:left\">train</td><td style=\"text-align:right\">4</td><td style=\"text-align:right\">1.0000</td></tr>"
    ));
    assert!(html.contains("test, class 1"));
}

#[test]
fn dataframe_table_is_bounded() {
    let tidy = nc_table(&["fc"], &["train", "test"]);
    let html = Table::new(&tidy).max_rows(6).caption("NC").to_html();
    assert!(html.contains("NC — shape: (64, 5)"), "{html}");
    assert!(html.contains("… 58 more rows …"));
    assert_eq!(html.matches("<tr>").count(), 1 + 6 + 1);
    assert!(html.contains("metric (str)"));
}
