//! Drawing a [`Scene`] on a plotters backend: title, legend, x–y panels and heat maps.

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axes::{fmt_tick, tick_label, Ticked};
use super::error::{draw_err, PlotError};
use super::scene::{HeatPanel, LegendEntry, Panel, Scene, XyPanel};
use super::style::{viridis, Dash, Marker, Style, AXIS, GRID, GRID_LIGHT, MUTED, TEXT};
use super::text::FAMILY;

/// Pixel sizes scaled for the output resolution.
#[derive(Clone, Copy)]
struct Px(f64);

impl Px {
    fn i(self, v: f64) -> i32 {
        (v * self.0).round() as i32
    }
    fn u(self, v: f64) -> u32 {
        (v * self.0).round().max(1.0) as u32
    }
    fn font(self, size: f64) -> f64 {
        size * self.0
    }
}

fn text_style(size: f64, color: &RGBColor) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(color)
}

fn text_width<DB: DrawingBackend, CT: plotters::coord::CoordTranslate>(
    area: &DrawingArea<DB, CT>,
    text: &str,
    size: f64,
) -> u32 {
    area.estimate_text_size(text, &text_style(size, &TEXT))
        .map(|(w, _)| w)
        .unwrap_or((text.chars().count() as f64 * size * 0.6) as u32)
}

fn shape(style: &Style, px: Px, filled: bool) -> ShapeStyle {
    ShapeStyle {
        color: style.color.mix(style.alpha),
        filled,
        stroke_width: px.u(style.width),
    }
}

/// Draws a polyline with the style's dash pattern on any drawing area.
fn draw_path<DB, CT>(
    area: &DrawingArea<DB, CT>,
    points: &[CT::From],
    style: &Style,
    px: Px,
) -> Result<(), PlotError>
where
    DB: DrawingBackend,
    CT: plotters::coord::CoordTranslate,
    CT::From: Clone + 'static,
{
    if points.len() < 2 {
        return Ok(());
    }
    let st = shape(style, px, false);
    let pts = points.to_vec();
    let dashed = |on: f64, off: f64| {
        area.draw(&DashedPathElement::new(
            pts.clone(),
            px.i(on).max(1),
            px.i(off).max(1),
            st,
        ))
    };
    match style.dash {
        Dash::None => Ok(()),
        Dash::Solid => area.draw(&PathElement::new(pts.clone(), st)),
        Dash::Dashed => dashed(7.0, 4.0),
        Dash::Dotted => dashed(2.0, 3.0),
        Dash::LongDash => dashed(10.0, 5.0),
    }
    .map_err(draw_err)
}

/// Draws one marker centred at `at`.
fn draw_marker<DB, CT>(
    area: &DrawingArea<DB, CT>,
    at: CT::From,
    style: &Style,
    px: Px,
) -> Result<(), PlotError>
where
    DB: DrawingBackend,
    CT: plotters::coord::CoordTranslate,
    CT::From: Clone + 'static,
{
    let r = px.i(style.size).max(1);
    let fill = shape(style, px, true);
    let outline = ShapeStyle {
        color: WHITE.mix(style.alpha * 0.9),
        filled: false,
        stroke_width: 1,
    };
    let e = EmptyElement::at(at.clone());
    let res = match style.marker {
        Marker::None => Ok(()),
        Marker::Circle => area
            .draw(&(e + Circle::new((0, 0), r, fill)))
            .and_then(|_| area.draw(&(EmptyElement::at(at) + Circle::new((0, 0), r, outline)))),
        Marker::Dot => area.draw(&(e + Circle::new((0, 0), r, fill))),
        Marker::Square => {
            let s = (r as f64 * 0.85).round() as i32;
            area.draw(&(e + Rectangle::new([(-s, -s), (s, s)], fill)))
        }
        Marker::Triangle => {
            let h = (r as f64 * 1.2).round() as i32;
            area.draw(&(e + Polygon::new(vec![(0, -h), (h, h * 3 / 4), (-h, h * 3 / 4)], fill)))
        }
        Marker::InvTriangle => {
            let h = (r as f64 * 1.2).round() as i32;
            area.draw(&(e + Polygon::new(vec![(0, h), (h, -h * 3 / 4), (-h, -h * 3 / 4)], fill)))
        }
        Marker::Diamond => {
            let h = (r as f64 * 1.25).round() as i32;
            area.draw(&(e + Polygon::new(vec![(0, -h), (h, 0), (0, h), (-h, 0)], fill)))
        }
        Marker::Cross => {
            let st = ShapeStyle {
                stroke_width: px.u(2.0),
                ..fill
            };
            area.draw(&(e + Cross::new((0, 0), r, st)))
        }
    };
    res.map_err(draw_err)
}

pub(super) fn draw_scene<DB: DrawingBackend>(
    scene: &Scene,
    root: &DrawingArea<DB, Shift>,
    scale: f64,
) -> Result<(), PlotError> {
    let px = Px(scale);
    root.fill(&WHITE).map_err(draw_err)?;
    let (w, _h) = root.dim_in_pixel();

    // Title and subtitle lines.
    let title_size = px.font(21.0);
    let sub_size = px.font(15.0);
    let mut y = px.i(10.0);
    let centred = |size: f64, color: &RGBColor| {
        text_style(size, color).pos(Pos::new(HPos::Center, VPos::Top))
    };
    root.draw_text(&scene.title, &centred(title_size, &TEXT), (w as i32 / 2, y))
        .map_err(draw_err)?;
    y += px.i(30.0);
    for line in &scene.subtitle {
        root.draw_text(line, &centred(sub_size, &MUTED), (w as i32 / 2, y))
            .map_err(draw_err)?;
        y += px.i(20.0);
    }
    let (_, body) = root.split_vertically(y + px.i(4.0));

    // Legend on the right, outside the plots.
    let legend_size = px.font(14.5);
    let (plots, legend_area) = if scene.legend.is_empty() {
        (body, None)
    } else {
        let widest = scene
            .legend
            .iter()
            .map(|e| text_width(&body, &e.label, legend_size))
            .max()
            .unwrap_or(0) as i32;
        let legend_w = (widest + px.i(58.0)).min(w as i32 * 2 / 5);
        let (p, l) = body.split_horizontally(w as i32 - legend_w);
        (p, Some(l))
    };
    if let Some(area) = &legend_area {
        draw_legend(area, &scene.legend, px, legend_size)?;
    }

    let columns = scene.columns.max(1);
    let rows = scene.panels.len().div_ceil(columns).max(1);
    let cells = plots.split_evenly((rows, columns));
    for (panel, area) in scene.panels.iter().zip(cells.iter()) {
        match panel {
            Panel::Xy(p) => draw_xy(p, area, px)?,
            Panel::Heat(p) => draw_heat(p, area, px)?,
        }
    }
    Ok(())
}

fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[LegendEntry],
    px: Px,
    size: f64,
) -> Result<(), PlotError> {
    let line_h = px.i(24.0);
    let mut y = px.i(18.0);
    let (x0, x1) = (px.i(6.0), px.i(36.0));
    for e in entries {
        let label_style = text_style(size, &TEXT).pos(Pos::new(HPos::Left, VPos::Center));
        draw_path(area, &[(x0, y), (x1, y)], &e.style, px)?;
        draw_marker(area, ((x0 + x1) / 2, y), &e.style, px)?;
        area.draw_text(&e.label, &label_style, (x1 + px.i(8.0), y))
            .map_err(draw_err)?;
        y += line_h;
    }
    Ok(())
}

/// Thins category labels that would overlap: every `k`-th label is kept.
fn thin_labels<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    ticks: &[(f64, String)],
    slot_px: f64,
    size: f64,
) -> Vec<(f64, String)> {
    let widest = ticks
        .iter()
        .map(|(_, l)| text_width(area, l, size))
        .max()
        .unwrap_or(0) as f64;
    let k = ((widest + 6.0) / slot_px.max(1.0)).ceil().max(1.0) as usize;
    ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| i % k == 0)
        .map(|(_, t)| t.clone())
        .collect()
}

fn draw_xy<DB: DrawingBackend>(
    panel: &XyPanel,
    area: &DrawingArea<DB, Shift>,
    px: Px,
) -> Result<(), PlotError> {
    let tick_size = px.font(14.0);
    let desc_size = px.font(15.5);
    let (aw, ah) = area.dim_in_pixel();

    // Panel title (small multiples) above the chart.
    let area = match &panel.title {
        Some(t) => {
            let style = text_style(px.font(16.0), &TEXT).pos(Pos::new(HPos::Center, VPos::Top));
            area.draw_text(t, &style, (aw as i32 / 2, px.i(12.0)))
                .map_err(draw_err)?;
            area.split_vertically(px.i(34.0)).1
        }
        None => area.clone(),
    };
    let (aw, ah2) = area.dim_in_pixel();
    let _ = ah;

    let y_tick_w = panel
        .y
        .ticks
        .iter()
        .map(|(_, l)| text_width(&area, l, tick_size))
        .max()
        .unwrap_or(0) as i32;
    let y_area = y_tick_w + px.i(14.0) + px.i(28.0);
    let x_area = px.i(56.0);
    let (m_top, m_right, m_left, m_bottom) = (px.i(10.0), px.i(18.0), px.i(6.0), px.i(4.0));
    let plot_w = (aw as i32 - y_area - m_left - m_right).max(10) as f64;
    let plot_h = (ah2 as i32 - x_area - m_top - m_bottom).max(10) as f64;

    let (mut xr, mut yr) = (panel.x.range, panel.y.range);
    if panel.equal_aspect {
        // Expand the narrower range so that one data unit has the same length on both axes.
        let (sx, sy) = ((xr.1 - xr.0) / plot_w, (yr.1 - yr.0) / plot_h);
        if sx > sy {
            let c = (yr.0 + yr.1) / 2.0;
            let half = sx * plot_h / 2.0;
            yr = (c - half, c + half);
        } else {
            let c = (xr.0 + xr.1) / 2.0;
            let half = sy * plot_w / 2.0;
            xr = (c - half, c + half);
        }
    }
    // Category labels that would overlap are thinned.
    let x_ticks = if panel.x.ticks.len() > 1 {
        let slot = plot_w / ((xr.1 - xr.0).abs().max(1e-12))
            * (panel.x.ticks[1].0 - panel.x.ticks[0].0).abs();
        thin_labels(&area, &panel.x.ticks, slot, tick_size)
    } else {
        panel.x.ticks.clone()
    };

    // An axis description longer than its axis is set smaller (down to 70 %).
    let fit = [(&panel.x.label, plot_w), (&panel.y.label, plot_h)]
        .iter()
        .map(|(label, room)| {
            let w = text_width(&area, label, desc_size) as f64;
            if w > 0.0 {
                (room / w).min(1.0)
            } else {
                1.0
            }
        })
        .fold(1.0f64, f64::min)
        .max(0.7);
    let desc_size = desc_size * fit;
    let x_key: Vec<f64> = x_ticks.iter().map(|t| t.0).collect();
    let y_key: Vec<f64> = panel.y.ticks.iter().map(|t| t.0).collect();
    let mut chart = ChartBuilder::on(&area)
        .margin_top(m_top)
        .margin_right(m_right)
        .margin_left(m_left)
        .margin_bottom(m_bottom)
        .x_label_area_size(x_area)
        .y_label_area_size(y_area)
        .build_cartesian_2d(
            Ticked::new(xr, x_key, panel.x.minor.clone()),
            Ticked::new(yr, y_key, panel.y.minor.clone()),
        )
        .map_err(draw_err)?;
    let x_fmt = |v: &f64| tick_label(&x_ticks, *v);
    let y_fmt = |v: &f64| tick_label(&panel.y.ticks, *v);
    chart
        .configure_mesh()
        .x_desc(panel.x.label.as_str())
        .y_desc(panel.y.label.as_str())
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style(text_style(tick_size, &TEXT))
        .axis_desc_style(text_style(desc_size, &TEXT))
        .bold_line_style(ShapeStyle {
            color: GRID.to_rgba(),
            filled: false,
            stroke_width: px.u(1.0),
        })
        .light_line_style(ShapeStyle {
            color: GRID_LIGHT.to_rgba(),
            filled: false,
            stroke_width: px.u(1.0),
        })
        .axis_style(ShapeStyle {
            color: AXIS.to_rgba(),
            filled: false,
            stroke_width: px.u(1.0),
        })
        .set_all_tick_mark_size(px.i(4.0))
        .draw()
        .map_err(draw_err)?;

    let plot = chart.plotting_area();
    for line in &panel.lines {
        let pts = if line.vertical {
            [(line.at, yr.0), (line.at, yr.1)]
        } else {
            [(xr.0, line.at), (xr.1, line.at)]
        };
        draw_path(plot, &pts, &line.style, px)?;
    }
    for s in panel.series.iter().filter(|s| s.band.len() >= 2) {
        // The band: upper edge left to right, then the lower edge back.
        let poly: Vec<(f64, f64)> = s
            .band
            .iter()
            .map(|&(x, _, hi)| (x, hi))
            .chain(s.band.iter().rev().map(|&(x, lo, _)| (x, lo)))
            .collect();
        plot.draw(&Polygon::new(poly, s.style.color.mix(0.18).filled()))
            .map_err(draw_err)?;
    }
    for s in &panel.series {
        draw_path(plot, &s.points, &s.style, px)?;
    }
    for s in &panel.series {
        for &p in &s.points {
            draw_marker(plot, p, &s.style, px)?;
        }
    }
    for n in &panel.notes {
        let style = text_style(px.font(14.0), &n.color).pos(Pos::new(HPos::Left, VPos::Bottom));
        plot.draw(
            &(EmptyElement::at(n.at) + Text::new(n.text.clone(), (px.i(5.0), -px.i(3.0)), style)),
        )
        .map_err(draw_err)?;
    }
    Ok(())
}

fn draw_heat<DB: DrawingBackend>(
    panel: &HeatPanel,
    area: &DrawingArea<DB, Shift>,
    px: Px,
) -> Result<(), PlotError> {
    let tick_size = px.font(14.0);
    let desc_size = px.font(15.5);
    let (aw, ah) = area.dim_in_pixel();
    let bar_w = px.i(100.0);
    let (main, bar) = area.split_horizontally(aw as i32 - bar_w);

    let nx = panel.columns.len();
    let ny = panel.rows.len();
    let y_tick_w = panel
        .rows
        .iter()
        .map(|l| text_width(&main, l, tick_size))
        .max()
        .unwrap_or(0) as i32;
    let y_area = y_tick_w + px.i(14.0) + px.i(28.0);
    let x_area = px.i(56.0);
    let (m_top, m_right, m_left, m_bottom) = (px.i(10.0), px.i(10.0), px.i(6.0), px.i(4.0));
    let plot_w = (aw as i32 - bar_w - y_area - m_left - m_right).max(10) as f64;
    let plot_h = (ah as i32 - x_area - m_top - m_bottom).max(10) as f64;
    let cell_w = plot_w / nx.max(1) as f64;
    let cell_h = plot_h / ny.max(1) as f64;

    let x_all: Vec<(f64, String)> = panel
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| (i as f64 + 0.5, c.clone()))
        .collect();
    let x_ticks = thin_labels(&main, &x_all, cell_w, tick_size);
    // First row at the top.
    let y_ticks: Vec<(f64, String)> = panel
        .rows
        .iter()
        .enumerate()
        .map(|(j, r)| ((ny - 1 - j) as f64 + 0.5, r.clone()))
        .collect();
    let x_key: Vec<f64> = x_ticks.iter().map(|t| t.0).collect();
    let y_key: Vec<f64> = y_ticks.iter().map(|t| t.0).collect();
    let mut chart = ChartBuilder::on(&main)
        .margin_top(m_top)
        .margin_right(m_right)
        .margin_left(m_left)
        .margin_bottom(m_bottom)
        .x_label_area_size(x_area)
        .y_label_area_size(y_area)
        .build_cartesian_2d(
            Ticked::new((0.0, nx as f64), x_key, vec![]),
            Ticked::new((0.0, ny as f64), y_key, vec![]),
        )
        .map_err(draw_err)?;
    let x_fmt = |v: &f64| tick_label(&x_ticks, *v);
    let y_fmt = |v: &f64| tick_label(&y_ticks, *v);
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(panel.x_label.as_str())
        .y_desc(panel.y_label.as_str())
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style(text_style(tick_size, &TEXT))
        .axis_desc_style(text_style(desc_size, &TEXT))
        .axis_style(ShapeStyle {
            color: AXIS.to_rgba(),
            filled: false,
            stroke_width: px.u(1.0),
        })
        .set_all_tick_mark_size(px.i(4.0))
        .draw()
        .map_err(draw_err)?;
    let plot = chart.plotting_area();
    let (lo, hi) = panel.range;
    let t_of = |v: f64| {
        let p = if panel.log { v.log10() } else { v };
        if hi > lo {
            (p - lo) / (hi - lo)
        } else {
            0.5
        }
    };
    let annotate = panel.annotate && cell_w >= px.font(44.0) && cell_h >= px.font(18.0);
    for (j, row) in panel.cells.iter().enumerate() {
        let y0 = (ny - 1 - j) as f64;
        for (i, cell) in row.iter().enumerate() {
            let x0 = i as f64;
            let (fill, text) = match cell {
                Some(v) => (viridis(t_of(*v)), Some(*v)),
                None => (RGBColor(0xee, 0xee, 0xee), None),
            };
            plot.draw(&Rectangle::new(
                [(x0, y0), (x0 + 1.0, y0 + 1.0)],
                fill.filled(),
            ))
            .map_err(draw_err)?;
            if annotate {
                let (label, color) = match text {
                    Some(v) => (fmt_tick(v, None), if t_of(v) < 0.6 { WHITE } else { BLACK }),
                    None => ("–".to_string(), MUTED),
                };
                let style =
                    text_style(px.font(13.0), &color).pos(Pos::new(HPos::Center, VPos::Center));
                plot.draw(&Text::new(label, (x0 + 0.5, y0 + 0.5), style))
                    .map_err(draw_err)?;
            }
        }
    }
    // Thin white separators between cells.
    let sep = ShapeStyle {
        color: WHITE.to_rgba(),
        filled: false,
        stroke_width: px.u(1.0),
    };
    for i in 1..nx {
        plot.draw(&PathElement::new(
            vec![(i as f64, 0.0), (i as f64, ny as f64)],
            sep,
        ))
        .map_err(draw_err)?;
    }
    for j in 1..ny {
        plot.draw(&PathElement::new(
            vec![(0.0, j as f64), (nx as f64, j as f64)],
            sep,
        ))
        .map_err(draw_err)?;
    }

    // Colour bar, aligned with the plotting area.
    let bar_tick_w = panel
        .bar
        .ticks
        .iter()
        .map(|(_, l)| text_width(&bar, l, tick_size))
        .max()
        .unwrap_or(0) as i32;
    let bar_label_area = (bar_tick_w + px.i(12.0) + px.i(22.0)).min(bar_w - px.i(26.0));
    let bar_key: Vec<f64> = panel.bar.ticks.iter().map(|t| t.0).collect();
    let mut bar_chart = ChartBuilder::on(&bar)
        .margin_top(m_top)
        .margin_bottom(m_bottom + x_area)
        .margin_left(px.i(4.0))
        .margin_right(px.i(2.0))
        .right_y_label_area_size(bar_label_area)
        .build_cartesian_2d(
            Ticked::new((0.0, 1.0), vec![], vec![]),
            Ticked::new((lo, hi), bar_key, vec![]),
        )
        .map_err(draw_err)?;
    let b_fmt = |v: &f64| tick_label(&panel.bar.ticks, *v);
    bar_chart
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_desc(panel.bar.label.as_str())
        .y_label_formatter(&b_fmt)
        .label_style(text_style(tick_size, &TEXT))
        .axis_desc_style(text_style(desc_size, &TEXT))
        .axis_style(ShapeStyle {
            color: AXIS.to_rgba(),
            filled: false,
            stroke_width: px.u(1.0),
        })
        .set_all_tick_mark_size(px.i(4.0))
        .draw()
        .map_err(draw_err)?;
    let steps = 96;
    let bar_plot = bar_chart.plotting_area();
    for k in 0..steps {
        let a = lo + (hi - lo) * k as f64 / steps as f64;
        let b = lo + (hi - lo) * (k + 1) as f64 / steps as f64;
        let color = viridis((k as f64 + 0.5) / steps as f64);
        bar_plot
            .draw(&Rectangle::new([(0.0, a), (1.0, b)], color.filled()))
            .map_err(draw_err)?;
    }
    Ok(())
}
