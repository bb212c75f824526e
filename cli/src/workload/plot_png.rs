//! PNG output of the sweep's plot (cargo feature `png`): the same drawing as
//! the SVG on plotters' bitmap backend. Text on a bitmap needs glyphs, so the
//! feature turns on plotters' `ab_glyph` rasterizer, which draws with fonts
//! registered at run time; [`register_font`] registers the system's DejaVu
//! Sans (Debian `fonts-dejavu-core`) or the TrueType file named by
//! `CHRONOS_PLOT_FONT`. With the rasterizer on, every plotters chart needs
//! that font, the SVG ones included, so `commands::main` registers it first.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;

use super::sweep::SweepRow;

/// Environment variable naming a TrueType font for the plots.
pub const FONT_ENV: &str = "CHRONOS_PLOT_FONT";

/// Where Debian's `fonts-dejavu-core` puts DejaVu Sans.
const SYSTEM_FONTS: [&str; 2] =
    ["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/TTF/DejaVuSans.ttf"];

/// Registers the plot font as plotters' `sans-serif` (once per process).
/// Errors: no readable font (install `fonts-dejavu-core` or set
/// [`FONT_ENV`]) or a file that is not a TrueType font.
pub fn register_font() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let candidates: Vec<PathBuf> = std::env::var_os(FONT_ENV)
            .map(PathBuf::from)
            .into_iter()
            .chain(SYSTEM_FONTS.iter().map(PathBuf::from))
            .collect();
        let Some((path, bytes)) = candidates.iter().find_map(|p| std::fs::read(p).ok().map(|b| (p, b))) else {
            return Err(format!(
                "no font for the PNG plot: install fonts-dejavu-core or set {FONT_ENV} to a .ttf file (looked at {})",
                candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            ));
        };
        // plotters keeps the font for the process's lifetime.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        for style in [FontStyle::Normal, FontStyle::Bold, FontStyle::Italic, FontStyle::Oblique] {
            plotters::style::register_font("sans-serif", style, bytes)
                .map_err(|_| format!("{} is not a TrueType font", path.display()))?;
        }
        Ok(())
    })
    .clone()
}

/// Writes the sweep's plot as a 900 x 560 PNG (the SVG's size).
pub fn write_png(rows: &[SweepRow], title: &str, path: &Path) -> Result<(), String> {
    register_font()?;
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    super::sweep_plot::draw(&root, rows, title)
}
