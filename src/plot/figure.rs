//! [`Figure`]: a drawn scene as SVG text, saved as `.svg` or rendered again as `.png` at any
//! scale, and shown inline in evcxr Jupyter.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use plotters::prelude::*;

use super::error::{draw_err, PlotError};
use super::render::draw_scene;
use super::scene::Scene;
use super::text::{ensure_font, TextFix};

/// A drawn figure: the SVG text, its size, and what is needed to render it again as a PNG.
///
/// In an evcxr Jupyter cell, a `Figure` as the last expression displays inline as SVG
/// ([`evcxr_display`](Figure::evcxr_display)). [`save`](Figure::save) writes `.svg` or `.png`.
#[derive(Clone)]
pub struct Figure {
    svg: String,
    width: u32,
    height: u32,
    scene: Arc<Scene>,
}

impl fmt::Debug for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Figure")
            .field("title", &self.scene.title)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("legend", &self.legend())
            .finish()
    }
}

/// Smallest and largest side of a figure, in pixels.
const SIZE_RANGE: std::ops::RangeInclusive<u32> = 64..=8192;

impl Figure {
    pub(super) fn render(scene: Scene) -> Result<Figure, PlotError> {
        ensure_font()?;
        let (width, height) = (scene.width, scene.height);
        if !SIZE_RANGE.contains(&width) || !SIZE_RANGE.contains(&height) {
            return Err(PlotError::BadSize { width, height });
        }
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
            draw_scene(&scene, &root, 1.0)?;
            root.present().map_err(draw_err)?;
        }
        Ok(Figure {
            svg,
            width,
            height,
            scene: Arc::new(scene),
        })
    }

    /// The SVG document.
    pub fn svg(&self) -> &str {
        &self.svg
    }

    /// Width in pixels (of the SVG, and of a PNG at scale 1).
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The figure's title.
    pub fn title(&self) -> &str {
        &self.scene.title
    }

    /// The legend's labels, in order (empty when the figure has no legend).
    pub fn legend(&self) -> Vec<String> {
        self.scene.legend.iter().map(|e| e.label.clone()).collect()
    }

    /// Shows the figure in an evcxr Jupyter cell as `image/svg+xml`.
    pub fn evcxr_display(&self) {
        crate::display::evcxr_print("image/svg+xml", &self.svg);
    }

    /// Writes the SVG document.
    ///
    /// # Errors
    /// [`PlotError::Save`] if the file cannot be written.
    pub fn save_svg(&self, path: impl AsRef<Path>) -> Result<(), PlotError> {
        let path = path.as_ref();
        std::fs::write(path, &self.svg).map_err(|e| PlotError::Save {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// Renders the figure as RGB pixels (row-major, 3 bytes per pixel) at `scale` times its
    /// size (e.g. 2 for a high-density screen), with text drawn from the bundled font.
    ///
    /// # Errors
    /// [`PlotError::BadSize`] if the scaled size leaves `64..=8192` or `scale` is not finite
    /// and positive; [`PlotError::Draw`] if plotters fails.
    pub fn to_rgb(&self, scale: f64) -> Result<(u32, u32, Vec<u8>), PlotError> {
        let (w, h) = self.scaled_size(scale)?;
        let mut buf = vec![255u8; w as usize * h as usize * 3];
        {
            let root = TextFix(BitMapBackend::with_buffer(&mut buf, (w, h))).into_drawing_area();
            draw_scene(&self.scene, &root, scale)?;
            root.present().map_err(draw_err)?;
        }
        Ok((w, h, buf))
    }

    fn scaled_size(&self, scale: f64) -> Result<(u32, u32), PlotError> {
        let w = (self.width as f64 * scale).round();
        let h = (self.height as f64 * scale).round();
        let ok = scale.is_finite()
            && scale > 0.0
            && SIZE_RANGE.contains(&(w.min(1e9) as u32))
            && SIZE_RANGE.contains(&(h.min(1e9) as u32));
        if !ok {
            return Err(PlotError::BadSize {
                width: w.clamp(0.0, u32::MAX as f64) as u32,
                height: h.clamp(0.0, u32::MAX as f64) as u32,
            });
        }
        Ok((w as u32, h as u32))
    }

    /// Writes a PNG of the figure's size ([`width`](Self::width) × [`height`](Self::height)).
    ///
    /// # Errors
    /// As [`save_png_scaled`](Self::save_png_scaled).
    pub fn save_png(&self, path: impl AsRef<Path>) -> Result<(), PlotError> {
        self.save_png_scaled(path, 1.0)
    }

    /// Writes a PNG at `scale` times the figure's size (lines, text and markers scale too).
    ///
    /// # Errors
    /// [`PlotError::BadSize`] for a bad scale, [`PlotError::Draw`] if plotters fails,
    /// [`PlotError::Save`] if the file cannot be written.
    pub fn save_png_scaled(&self, path: impl AsRef<Path>, scale: f64) -> Result<(), PlotError> {
        let path = path.as_ref();
        let (w, h) = self.scaled_size(scale)?;
        let save = |e: &dyn fmt::Display| PlotError::Save {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        // The image encoder picks the format from the extension: insist on .png.
        let is_png = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("png"));
        if !is_png {
            return Err(save(&"a PNG file name must end in .png"));
        }
        let root = TextFix(BitMapBackend::new(path, (w, h))).into_drawing_area();
        draw_scene(&self.scene, &root, scale)?;
        root.present().map_err(|e| save(&e))
    }

    /// Writes the figure as SVG or PNG, chosen by the extension of `path` (`.svg` / `.png`).
    ///
    /// # Errors
    /// [`PlotError::Save`] for another extension or a write failure; as
    /// [`save_png`](Self::save_png).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), PlotError> {
        let path = path.as_ref();
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref()
        {
            Some("svg") => self.save_svg(path),
            Some("png") => self.save_png(path),
            _ => Err(PlotError::Save {
                path: path.display().to_string(),
                message: "unknown extension: use .svg or .png".into(),
            }),
        }
    }
}

/// The options every builder has — its title and figure size — embedded in each builder as
/// `figure` and set through the builder's `title` and `size` setters
/// ([`figure_option_setters`]).
#[derive(Debug, Clone, Default)]
pub(super) struct FigureOptions {
    /// The title; `None`: the builder's default title.
    pub(super) title: Option<String>,
    /// Width × height in pixels; `None`: the builder's default size.
    pub(super) size: Option<(u32, u32)>,
}

impl FigureOptions {
    /// The size set, or `default`, checked by [`check_size`].
    pub(super) fn size_or(&self, default: (u32, u32)) -> Result<(u32, u32), PlotError> {
        check_size(self.size.unwrap_or(default))
    }
}

/// The `title` and `size` setters of a builder with a `figure: FigureOptions` field, documented
/// by `$title_doc` and `$size_doc` (the defaults differ between builders).
macro_rules! figure_option_setters {
    ($title_doc:literal, $size_doc:literal) => {
        #[doc = $title_doc]
        pub fn title(mut self, title: impl Into<String>) -> Self {
            self.figure.title = Some(title.into());
            self
        }

        #[doc = $size_doc]
        pub fn size(mut self, width: u32, height: u32) -> Self {
            self.figure.size = Some((width, height));
            self
        }
    };
}
pub(super) use figure_option_setters;

fn check_size(size: (u32, u32)) -> Result<(u32, u32), PlotError> {
    if SIZE_RANGE.contains(&size.0) && SIZE_RANGE.contains(&size.1) {
        Ok(size)
    } else {
        Err(PlotError::BadSize {
            width: size.0,
            height: size.1,
        })
    }
}
