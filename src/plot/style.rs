//! Style: palettes (categorical, viridis), text and grid colours, dash patterns and markers.

use plotters::style::RGBColor;

/// Categorical palette: alternating dark and light colours (distinct in greyscale), paired
/// with distinct markers.
pub(super) const PALETTE: [RGBColor; 8] = [
    RGBColor(0x1f, 0x3a, 0x93), // dark blue
    RGBColor(0xe6, 0x9f, 0x00), // orange (light)
    RGBColor(0x00, 0x8a, 0x60), // green (mid)
    RGBColor(0xc4, 0x39, 0x1d), // vermilion (mid-dark)
    RGBColor(0x56, 0xb4, 0xe9), // sky blue (light)
    RGBColor(0x6a, 0x2c, 0x8a), // purple (dark)
    RGBColor(0x9a, 0x9a, 0x2e), // olive (mid-light)
    RGBColor(0x40, 0x40, 0x40), // dark grey
];

pub(super) const MARKERS: [Marker; 6] = [
    Marker::Circle,
    Marker::Square,
    Marker::Triangle,
    Marker::Diamond,
    Marker::Cross,
    Marker::InvTriangle,
];

/// Viridis at 9 evenly spaced points (matplotlib); lightness increases monotonically.
const VIRIDIS: [(u8, u8, u8); 9] = [
    (0x44, 0x01, 0x54),
    (0x47, 0x2c, 0x7a),
    (0x3b, 0x51, 0x8b),
    (0x2c, 0x71, 0x8e),
    (0x21, 0x90, 0x8d),
    (0x27, 0xad, 0x81),
    (0x5c, 0xc8, 0x63),
    (0xaa, 0xdc, 0x32),
    (0xfd, 0xe7, 0x25),
];

/// Viridis at `t ∈ [0, 1]` (clamped), linearly interpolated.
pub(super) fn viridis(t: f64) -> RGBColor {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let x = t * (VIRIDIS.len() - 1) as f64;
    let i = (x.floor() as usize).min(VIRIDIS.len() - 2);
    let f = x - i as f64;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    let mix = |p: u8, q: u8| (p as f64 + (q as f64 - p as f64) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

pub(super) const TEXT: RGBColor = RGBColor(0x22, 0x22, 0x22);
pub(super) const MUTED: RGBColor = RGBColor(0x55, 0x55, 0x55);
pub(super) const GRID: RGBColor = RGBColor(0xdc, 0xdc, 0xdc);
pub(super) const GRID_LIGHT: RGBColor = RGBColor(0xf0, 0xf0, 0xf0);
pub(super) const AXIS: RGBColor = RGBColor(0x60, 0x60, 0x60);
pub(super) const REFERENCE: RGBColor = RGBColor(0x80, 0x80, 0x80);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dash {
    None,
    Solid,
    Dashed,
    Dotted,
    LongDash,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Marker {
    None,
    Circle,
    Square,
    Triangle,
    InvTriangle,
    Diamond,
    Cross,
    Dot,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Style {
    pub(super) color: RGBColor,
    pub(super) dash: Dash,
    pub(super) marker: Marker,
    /// Line width in logical pixels.
    pub(super) width: f64,
    /// Marker radius in logical pixels.
    pub(super) size: f64,
    pub(super) alpha: f64,
}

impl Style {
    pub(super) fn line(color: RGBColor, dash: Dash, marker: Marker) -> Self {
        Style {
            color,
            dash,
            marker,
            width: 2.0,
            size: 4.0,
            alpha: 1.0,
        }
    }

    pub(super) fn points(color: RGBColor, marker: Marker, size: f64) -> Self {
        Style {
            color,
            dash: Dash::None,
            marker,
            width: 1.0,
            size,
            alpha: 1.0,
        }
    }
}

/// Dash pattern of a split: `train` solid, `test` dashed; variants of the test split as the
/// findings name them — `test (own means)` dashed, `test (train means)` long-dashed — and any
/// other split dotted.
pub(super) fn split_dash(split: Option<&str>) -> Dash {
    match split {
        Some("train") | None => Dash::Solid,
        Some(s) if s.starts_with("test") && s.contains("train means") => Dash::LongDash,
        Some(s) if s.starts_with("test") => Dash::Dashed,
        _ => Dash::Dotted,
    }
}
