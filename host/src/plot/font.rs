//! The font every label is drawn with, embedded in the binary so plotting works on a
//! machine without any fonts installed.

use std::sync::OnceLock;

use super::PlotError;

/// DejaVu Sans cut down to Latin-1 and a few symbols (see `assets/fonts/make_plot_font.py`).
const FONT: &[u8] = include_bytes!("../../assets/fonts/R1PlotSans.ttf");
/// Registered under the generic name so an SVG viewer falls back to its own sans-serif font.
pub(super) const FONT_FAMILY: &str = "sans-serif";

/// Registers the embedded font with plotters once per process.
pub(super) fn register_plot_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FONT_FAMILY, plotters::style::FontStyle::Normal, FONT).is_ok());
    if ok { Ok(()) } else { Err(PlotError::Font) }
}
