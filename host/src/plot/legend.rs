//! Where a chart's legend goes: the corner with the fewest of the curve's values under it,
//! placed by hand from its measured size so it never hides the stage names.

use plotters::prelude::*;

use super::curves::Point;
use super::figure::{Bounds, Chart, Drawn, Look};
use super::font::FONT_FAMILY;

/// Legend geometry in pixels: room for a series' marker, padding inside the box, distance
/// from the plot's edge.
const LEGEND_MARKER: i32 = 30;
const LEGEND_PADDING: i32 = 10;
const LEGEND_INSET: i32 = 6;

/// Draws the legend of the series labelled so far (`legend`: their labels, in order) in
/// the emptiest corner of the chart.
pub(super) fn draw_legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    legend: &[String],
    points: &[Point],
    look: &Look,
    bounds: Bounds,
    show_stages: bool,
) -> Drawn<(), DB> {
    let corner = legend_corner(points, bounds.x, bounds.y);
    let label_style = TextStyle::from((FONT_FAMILY, look.legend));
    let mut lines = MultiLineText::<_, &str>::new((0, 0), &label_style);
    for line in legend {
        lines.push_line(line.as_str());
    }
    let plot_size = chart.plotting_area().dim_in_pixel();
    // On a figure with stage names the legend starts below them.
    let top = if show_stages {
        look.stage as i32 + 16
    } else {
        LEGEND_INSET
    };
    let position = match lines.estimate_dimension() {
        Ok(text_size) => legend_position(corner, text_size, plot_size, top),
        Err(_) => match corner {
            (true, true) => SeriesLabelPosition::UpperRight,
            (true, false) => SeriesLabelPosition::LowerRight,
            (false, true) => SeriesLabelPosition::UpperLeft,
            (false, false) => SeriesLabelPosition::LowerLeft,
        },
    };
    chart
        .configure_series_labels()
        .position(position)
        .legend_area_size(LEGEND_MARKER)
        .margin(LEGEND_PADDING)
        .background_style(WHITE.mix(0.88))
        .border_style(BLACK.mix(0.35))
        .label_font((FONT_FAMILY, look.legend))
        .draw()?;
    Ok(())
}

/// The legend box's top-left corner in the plot for `corner` (right, upper), its text
/// measuring `text_w × text_h` and the plot `plot_w × plot_h` pixels; an upper legend
/// starts at `top`. plotters would put it 5 px from the plot's edge, over the stage names.
fn legend_position(
    (right, upper): (bool, bool),
    (text_w, text_h): (i32, i32),
    (plot_w, plot_h): (u32, u32),
    top: i32,
) -> SeriesLabelPosition {
    let (w, h) = (text_w + LEGEND_MARKER + 2 * LEGEND_PADDING, text_h + 2 * LEGEND_PADDING);
    let x = if right {
        plot_w as i32 - w - LEGEND_INSET
    } else {
        LEGEND_INSET
    };
    let y = if upper { top } else { plot_h as i32 - h - LEGEND_INSET };
    SeriesLabelPosition::Coordinate(x, y)
}

/// The legend corner, as (right, upper), with the fewest values of the curve (its ± band
/// edges included) under it, preferring the right and then the top on a tie.
fn legend_corner(points: &[Point], (x0, x1): (f64, f64), (y0, y1): (f64, f64)) -> (bool, bool) {
    let samples: Vec<(f64, f64)> = points
        .iter()
        .flat_map(|p| {
            let s = p.std.unwrap_or(0.0);
            [p.y - s, p.y, p.y + s].map(|y| ((p.x - x0) / (x1 - x0), (y - y0) / (y1 - y0)))
        })
        .collect();
    let under = |right: bool, upper: bool| {
        samples
            .iter()
            .filter(|&&(u, _)| if right { u > 0.55 } else { u < 0.45 })
            .filter(|&&(_, v)| if upper { v > 0.65 } else { v < 0.35 })
            .count()
    };
    [(true, true), (true, false), (false, true), (false, false)]
        .into_iter()
        .min_by_key(|&(right, upper)| under(right, upper))
        .unwrap_or((true, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_legend_goes_to_the_emptiest_corner() {
        let p = |x: f64, y: f64| Point {
            x,
            y,
            stage: 0,
            std: None,
        };
        // A rising curve leaves the upper left and lower right empty; right wins ties.
        let rising: Vec<Point> = (0..=10).map(|i| p(i as f64, i as f64)).collect();
        assert_eq!(legend_corner(&rising, (0.0, 10.0), (0.0, 10.0)), (true, false));
        // A loss that falls to the floor fills both lower corners.
        let falling: Vec<Point> = (0..=10).map(|i| p(i as f64, if i < 2 { 10.0 } else { 0.0 })).collect();
        assert_eq!(legend_corner(&falling, (0.0, 10.0), (0.0, 10.0)), (true, true));
    }

    #[test]
    fn an_upper_legend_starts_below_the_stage_names_and_a_lower_one_sits_on_the_inset() {
        let at = |corner| match legend_position(corner, (100, 40), (800, 400), 31) {
            SeriesLabelPosition::Coordinate(x, y) => (x, y),
            _ => unreachable!("always a coordinate"),
        };
        assert_eq!(at((true, true)), (800 - 150 - 6, 31));
        assert_eq!(at((false, false)), (6, 400 - 60 - 6));
    }
}
