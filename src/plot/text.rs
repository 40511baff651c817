//! Text: the bundled font (registered with plotters for SVG text metrics) and the PNG text
//! rasteriser [`TextFix`], which draws glyphs from that font with the SVG backend's metrics.

use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingErrorKind,
};

use super::error::PlotError;

/// DejaVu Sans 2.37 (Bitstream Vera licence, `assets/DejaVuSans-LICENSE.txt`).
static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
pub(super) const FAMILY: &str = "sans-serif";

/// Registers the bundled font with plotters (once per process) under `sans-serif`, the family
/// every text of the module uses.
pub(super) fn ensure_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(PlotError::Draw(
            "the bundled DejaVu Sans font could not be loaded".into(),
        ))
    }
}

/// The bundled font, parsed once.
fn face() -> Option<&'static ab_glyph::FontRef<'static>> {
    static FACE: OnceLock<Option<ab_glyph::FontRef<'static>>> = OnceLock::new();
    FACE.get_or_init(|| ab_glyph::FontRef::try_from_slice(FONT).ok())
        .as_ref()
}

/// A pixel backend whose text is rasterised here, from the bundled font, with each glyph at its
/// proper place (plotters 0.3.7 drops the glyphs' side bearings) and with the SVG backend's
/// metrics: em = size / 1.24, and the baseline where an SVG viewer puts it for each anchor
/// (`dy` of 0.76 em, 0.5 ex or −0.5 ex). Everything else goes to the wrapped backend.
pub(super) struct TextFix<B>(pub(super) B);

impl<B: DrawingBackend> DrawingBackend for TextFix<B> {
    type ErrorType = B::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.0.get_size()
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.ensure_prepared()
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.present()
    }

    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_pixel(point, color)
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_line(from, to, style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_path(path, style)
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.fill_polygon(vert, style)
    }

    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.blit_bitmap(pos, size, src)
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        use ab_glyph::{point, Font, PxScale, ScaleFont};
        let Some(font) = face() else {
            return self.0.draw_text(text, style, pos);
        };
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let em = style.size() / 1.24;
        let units = font.units_per_em().unwrap_or(2048.0) as f64;
        let scale = PxScale::from((em * font.height_unscaled() as f64 / units) as f32);
        let scaled = font.as_scaled(scale);
        let mut caret = 0.0f32;
        let mut prev = None;
        let mut glyphs = Vec::with_capacity(text.len());
        for ch in text.chars() {
            let id = scaled.glyph_id(ch);
            if let Some(p) = prev {
                caret += scaled.kern(p, id);
            }
            glyphs.push(id.with_scale_and_position(scale, point(caret, 0.0)));
            caret += scaled.h_advance(id);
            prev = Some(id);
        }
        let anchor = style.anchor();
        let dx = match anchor.h_pos {
            HPos::Left => 0.0,
            HPos::Center => -(caret as f64) / 2.0,
            HPos::Right => -(caret as f64),
        };
        // DejaVu Sans: x-height 1118/2048 em.
        let ex = em * 1118.0 / 2048.0;
        let dy = match anchor.v_pos {
            VPos::Top => 0.76 * em,
            VPos::Center => 0.5 * ex,
            VPos::Bottom => -0.5 * ex,
        };
        let transform = style.transform();
        let mut pixels = Vec::new();
        for g in glyphs {
            if let Some(outline) = font.outline_glyph(g) {
                let b = outline.px_bounds();
                outline.draw(|x, y, c| {
                    let lx = (b.min.x as f64 + x as f64 + dx).round() as i32;
                    let ly = (b.min.y as f64 + y as f64 + dy).round() as i32;
                    let (rx, ry) = transform.transform(lx, ly);
                    pixels.push((pos.0 + rx, pos.1 + ry, c));
                });
            }
        }
        for (x, y, c) in pixels {
            if c > 0.0 {
                self.0.draw_pixel(
                    (x, y),
                    BackendColor {
                        alpha: color.alpha * c.min(1.0) as f64,
                        rgb: color.rgb,
                    },
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::axes::{fmt_tick, superscript};
    use crate::plot::labels::metric_label;

    #[test]
    fn every_label_character_is_in_the_bundled_font() {
        use ab_glyph::{Font, FontRef};
        let font = FontRef::try_from_slice(FONT).unwrap();
        let mut texts: Vec<String> = crate::config::Metric::ALL
            .iter()
            .flat_map(|m| [metric_label(m.name()), m.short().to_string()])
            .collect();
        texts.extend([
            fmt_tick(1e-9, None),
            fmt_tick(-2e7, None),
            "classifier row w_c (×‖Ṁ‖_F/‖W‖_F)".into(),
            "C = 10: mean cos(μ_c − μ_G, μ_c′ − μ_G) = −0.1; simplex ETF: −1/(C−1) = −0.111".into(),
            "PC1 of the centred class means (41% of ‖μ_c − μ_G‖²) — layer · train –".into(),
            superscript(-1234567890),
        ]);
        for t in texts {
            for ch in t.chars() {
                assert_ne!(
                    font.glyph_id(ch).0,
                    0,
                    "{ch:?} (U+{:04X}) of {t:?}",
                    ch as u32
                );
            }
        }
    }
}
