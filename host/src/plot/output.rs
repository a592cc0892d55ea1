//! Writing a figure to disk: rendered once to PNG pixels and once to SVG text, each file
//! replaced atomically so a viewer never sees half a plot.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::PlotError;
use super::figure::{Figure, draw_figure};
use crate::io::atomic::{write_atomically, write_bytes_atomically};

/// Writes `figure` as `dir/<stem>.png` and `dir/<stem>.svg`; returns both paths in that order.
pub(super) fn write_png_and_svg(
    dir: &Path,
    stem: &str,
    size: (u32, u32),
    figure: &Figure,
) -> Result<[PathBuf; 2], PlotError> {
    Ok([
        write_png(&dir.join(format!("{stem}.png")), size, figure)?,
        write_svg(&dir.join(format!("{stem}.svg")), size, figure)?,
    ])
}

fn draw_error(path: &Path, e: impl std::fmt::Display) -> PlotError {
    PlotError::Draw {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

/// Renders `figure` to an RGB buffer and writes it as a PNG.
fn write_png(path: &Path, size: (u32, u32), figure: &Figure) -> Result<PathBuf, PlotError> {
    let mut pixels = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
        draw_figure(&root, figure).map_err(|e| draw_error(path, e))?;
        root.present().map_err(|e| draw_error(path, e))?;
    }
    write_atomically(path, |w| {
        let mut encoder = png::Encoder::new(w, size.0, size.1);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(std::io::Error::other)?;
        writer.write_image_data(&pixels).map_err(std::io::Error::other)?;
        writer.finish().map_err(std::io::Error::other)
    })?;
    Ok(path.to_path_buf())
}

/// Renders `figure` as SVG text and writes it.
fn write_svg(path: &Path, size: (u32, u32), figure: &Figure) -> Result<PathBuf, PlotError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        draw_figure(&root, figure).map_err(|e| draw_error(path, e))?;
        root.present().map_err(|e| draw_error(path, e))?;
    }
    write_bytes_atomically(path, svg.as_bytes())?;
    Ok(path.to_path_buf())
}
