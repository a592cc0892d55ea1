//! Drawing a figure with plotters: a single curve with its axes, stage regions, ± band,
//! per-step line, moving mean and legend, or the four-panel summary of a run.

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::axes::{StepAxis, TickFormat, format_power_of_ten};
use super::curves::{
    Curve, Mark, Point, SMOOTH_FROM, band_edges, moving_mean, plotted_points, smoothing_window, stage_segments,
    wants_log_scale,
};
use super::font::FONT_FAMILY;
use super::legend::draw_legend;

/// Size of a single-curve figure and of the summary, in pixels (SVG user units alike).
pub(super) const CURVE_SIZE: (u32, u32) = (1000, 560);
pub(super) const SUMMARY_SIZE: (u32, u32) = (1400, 860);

/// Stage boundaries and names; no curve uses it, so a boundary is told apart in an SVG.
const GREY: RGBColor = RGBColor(90, 90, 90);

/// A chart over (step, value).
pub(super) type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;
/// What a plotters drawing call returns.
pub(super) type Drawn<T, DB> = Result<T, DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// Font sizes and spacing of a figure.
pub(super) struct Look {
    caption: u32,
    label: u32,
    desc: u32,
    pub legend: u32,
    pub stage: u32,
    margin: u32,
    x_area: u32,
    y_area: u32,
    x_ticks: usize,
    y_ticks: usize,
}

/// A single-curve figure.
const FULL: Look = Look {
    caption: 24,
    label: 15,
    desc: 16,
    legend: 15,
    stage: 15,
    margin: 14,
    x_area: 50,
    y_area: 72,
    x_ticks: 10,
    y_ticks: 8,
};
/// One panel of the summary.
const PANEL: Look = Look {
    caption: 20,
    label: 13,
    desc: 14,
    legend: 13,
    stage: 13,
    margin: 12,
    x_area: 44,
    y_area: 64,
    x_ticks: 8,
    y_ticks: 6,
};

/// What one output file shows.
pub(super) enum Figure<'a> {
    Curve(&'a Curve, &'a StepAxis),
    Summary {
        title: &'a str,
        panels: &'a [(&'a Curve, &'a StepAxis)],
    },
}

/// The summary shows the first four of these that the run logged, then any other curve.
const SUMMARY_PRIORITY: [&str; 8] = [
    "reward",
    "eval/accuracy",
    "loss",
    "completions/mean_length",
    "kl",
    "entropy",
    "grad_norm",
    "learning_rate",
];

/// The (at most four) panels of the summary, in [`SUMMARY_PRIORITY`] order.
pub(super) fn summary_panels(curves: &[(Curve, StepAxis)]) -> Vec<(&Curve, &StepAxis)> {
    SUMMARY_PRIORITY
        .iter()
        .filter_map(|key| curves.iter().find(|(c, _)| c.key == *key))
        .chain(
            curves
                .iter()
                .filter(|(c, _)| !SUMMARY_PRIORITY.contains(&c.key.as_str())),
        )
        .take(4)
        .map(|(c, a)| (c, a))
        .collect()
}

pub(super) fn draw_figure<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, figure: &Figure) -> Drawn<(), DB> {
    root.fill(&WHITE)?;
    match figure {
        Figure::Curve(curve, axis) => draw_curve(root, axis, curve, &FULL),
        Figure::Summary { title, panels } => {
            let area = root.titled(title, (FONT_FAMILY, 26))?;
            let grid = match panels.len() {
                1 => (1, 1),
                2 => (1, 2),
                _ => (2, 2),
            };
            for (panel, (curve, axis)) in area.split_evenly(grid).iter().zip(panels.iter()) {
                draw_curve(panel, axis, curve, &PANEL)?;
            }
            Ok(())
        }
    }
}

/// The value ranges a chart spans.
#[derive(Clone, Copy, Debug)]
pub(super) struct Bounds {
    pub x: (f64, f64),
    pub y: (f64, f64),
}

/// Draws one curve with its axes, stage shading, boundaries and names, and legend.
fn draw_curve<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    axis: &StepAxis,
    curve: &Curve,
    look: &Look,
) -> Drawn<(), DB> {
    let show_stages = axis.has_named_stages();
    let log_y = wants_log_scale(curve);
    let points = plotted_points(curve, log_y);
    let bounds = Bounds {
        x: axis.range(),
        y: y_range(&points, curve.mark, show_stages),
    };
    let mut chart = draw_mesh(area, axis, curve, look, bounds, log_y)?;
    if show_stages {
        draw_stages(area, &mut chart, axis, look, bounds)?;
    }
    let smoothed = matches!(curve.mark, Mark::Line { smooth: true }) && points.len() >= SMOOTH_FROM;
    let window = smoothed.then(|| smoothing_window(points.len()));
    let mut legend: Vec<String> = Vec::new();
    if let Some(band) = curve.band.as_ref().filter(|_| !log_y) {
        draw_band(&mut chart, &points, band, curve.color, window, &mut legend)?;
    }
    match curve.mark {
        Mark::Line { .. } => draw_line(&mut chart, &points, curve, window, &mut legend)?,
        Mark::Points => draw_evaluations(&mut chart, &points, curve, &mut legend)?,
    }
    draw_legend(&mut chart, &legend, &points, look, bounds, show_stages)
}

/// The chart with its caption, grid, tick labels and axis names.
fn draw_mesh<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    axis: &StepAxis,
    curve: &Curve,
    look: &Look,
    Bounds {
        x: (x0, x1),
        y: (y0, y1),
    }: Bounds,
    log_y: bool,
) -> Drawn<Chart<'a, DB>, DB> {
    let x_ticks = TickFormat::for_range(x0, x1, look.x_ticks);
    let y_ticks = TickFormat::for_range(y0, y1, look.y_ticks);
    // On a log axis a tick every decade: ask for no more labels than there are decades.
    let y_labels = if log_y {
        ((y1 - y0).floor() as usize + 1).clamp(2, look.y_ticks)
    } else {
        look.y_ticks
    };
    let y_format = |v: &f64| {
        if log_y {
            format_power_of_ten(*v)
        } else {
            y_ticks.format(*v)
        }
    };
    let y_desc = if log_y {
        format!("{} (log scale)", curve.key)
    } else {
        curve.key.clone()
    };
    let mut chart = ChartBuilder::on(area)
        .caption(&curve.title, (FONT_FAMILY, look.caption))
        .margin(look.margin)
        .x_label_area_size(look.x_area)
        .y_label_area_size(look.y_area)
        .build_cartesian_2d(x0..x1, y0..y1)?;
    chart
        .configure_mesh()
        .x_desc(axis.label)
        .y_desc(y_desc)
        .x_labels(look.x_ticks)
        .y_labels(y_labels)
        .x_label_formatter(&|v| x_ticks.format(*v))
        .y_label_formatter(&y_format)
        .label_style((FONT_FAMILY, look.label))
        .axis_desc_style((FONT_FAMILY, look.desc))
        .bold_line_style(RGBColor(225, 225, 225))
        .light_line_style(RGBColor(245, 245, 245))
        .draw()?;
    Ok(chart)
}

/// Every other stage shaded (so a stage reads as a region, not only as a line), a dashed
/// boundary between stages, and each stage's name at its top left where it fits.
fn draw_stages<'a, DB: DrawingBackend + 'a>(
    area: &DrawingArea<DB, Shift>,
    chart: &mut Chart<'a, DB>,
    axis: &StepAxis,
    look: &Look,
    Bounds { x, y: (y0, y1) }: Bounds,
) -> Drawn<(), DB> {
    let regions = axis.stage_regions(x);
    chart.draw_series(
        regions
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, &(lo, hi))| Rectangle::new([(lo, y0), (hi, y1)], BLACK.mix(0.045).filled())),
    )?;
    for &(lo, _) in regions.iter().skip(1) {
        chart.draw_series(DashedLineSeries::new([(lo, y0), (lo, y1)], 6, 4, GREY.stroke_width(1)))?;
    }
    let name_style = TextStyle::from((FONT_FAMILY, look.stage)).color(&GREY);
    for (stage, &(lo, hi)) in axis.stages.iter().zip(&regions) {
        let width = chart.backend_coord(&(hi, y1)).0 - chart.backend_coord(&(lo, y1)).0;
        let fits = |text: &str| {
            area.estimate_text_size(text, &name_style)
                .is_ok_and(|(w, _)| w as i32 + 8 <= width)
        };
        if let Some(name) = shorten_to_fit(&stage.name, fits) {
            chart.draw_series(std::iter::once(
                EmptyElement::at((lo, y1)) + Text::new(name, (5, 5), name_style.clone()),
            ))?;
        }
    }
    Ok(())
}

/// The ± `band` around each stage's points that carry a standard deviation, smoothed over
/// `window` points when the curve is; in the legend once.
fn draw_band<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    points: &[Point],
    band: &str,
    color: RGBColor,
    window: Option<usize>,
    legend: &mut Vec<String>,
) -> Drawn<(), DB> {
    let fill = color.mix(0.16).filled();
    let mut labelled = false;
    for segment in stage_segments(points) {
        let with_std: Vec<Point> = segment.iter().filter(|p| p.std.is_some()).copied().collect();
        if with_std.len() < 2 {
            continue;
        }
        let (upper, lower) = band_edges(&with_std, window);
        let outline = upper
            .iter()
            .chain(lower.iter().rev())
            .map(|p| (p.x, p.y))
            .collect::<Vec<_>>();
        let series = chart.draw_series(std::iter::once(Polygon::new(outline, fill)))?;
        if !labelled {
            labelled = true;
            legend.push(format!("± {band}"));
            series
                .label(format!("± {band}"))
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 22, y + 6)], fill));
        }
    }
    Ok(())
}

/// A line curve: each step faint under a bold moving mean of `window` steps when smoothed,
/// else a solid line, with markers on a short curve.
fn draw_line<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    points: &[Point],
    curve: &Curve,
    window: Option<usize>,
    legend: &mut Vec<String>,
) -> Drawn<(), DB> {
    let color = curve.color;
    let (raw_style, raw_label) = match window {
        Some(_) => (color.mix(0.35).stroke_width(1), format!("{} (each step)", curve.key)),
        None => (color.stroke_width(2), curve.key.clone()),
    };
    draw_lines(chart, points, raw_style, raw_label, legend)?;
    if let Some(window) = window {
        let mean = moving_mean(points, window);
        let label = format!("moving mean of {window} steps");
        draw_lines(chart, &mean, color.stroke_width(3), label, legend)?;
    }
    if points.len() < SMOOTH_FROM {
        chart.draw_series(points.iter().map(|p| Circle::new((p.x, p.y), 3, color.filled())))?;
    }
    Ok(())
}

/// Sparse values (evaluations): a marker on each, joined by a thin line within a stage.
fn draw_evaluations<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    points: &[Point],
    curve: &Curve,
    legend: &mut Vec<String>,
) -> Drawn<(), DB> {
    let color = curve.color;
    legend.push(curve.key.clone());
    for segment in stage_segments(points) {
        let xy = segment.iter().map(|p| (p.x, p.y));
        chart.draw_series(LineSeries::new(xy, color.mix(0.6).stroke_width(1)))?;
    }
    chart
        .draw_series(points.iter().map(|p| Circle::new((p.x, p.y), 4, color.filled())))?
        .label(curve.key.as_str())
        .legend(move |(x, y)| {
            EmptyElement::at((x, y))
                + PathElement::new([(0, 0), (22, 0)], color.stroke_width(1))
                + Circle::new((11, 0), 4, color.filled())
        });
    Ok(())
}

/// Draws `points` as one line per stage, with `label` in the legend once.
fn draw_lines<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    points: &[Point],
    style: ShapeStyle,
    label: String,
    legend: &mut Vec<String>,
) -> Drawn<(), DB> {
    let mut labelled = false;
    for segment in stage_segments(points) {
        let series = chart.draw_series(LineSeries::new(segment.iter().map(|p| (p.x, p.y)), style))?;
        if !labelled {
            labelled = true;
            legend.push(label.clone());
            series
                .label(label.clone())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 22, y)], style));
        }
    }
    Ok(())
}

/// `name` if it fits, else its longest prefix (of at least two characters) with an ellipsis
/// that fits, else nothing.
fn shorten_to_fit(name: &str, fits: impl Fn(&str) -> bool) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    if fits(name) {
        return Some(name.to_string());
    }
    let chars: Vec<char> = name.chars().collect();
    (2..chars.len())
        .rev()
        .map(|n| chars[..n].iter().collect::<String>() + "…")
        .find(|s| fits(s))
}

/// The y range of a curve: its values and ± bands with 5 % room, accuracies on [0, 1],
/// and extra room at the top for the stage names.
fn y_range(points: &[Point], mark: Mark, show_stages: bool) -> (f64, f64) {
    let values = points.iter().flat_map(|p| {
        let s = p.std.unwrap_or(0.0);
        [p.y - s, p.y + s]
    });
    let (mut lo, mut hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if mark == Mark::Points && lo >= 0.0 && hi <= 1.0 {
        (lo, hi) = (0.0, 1.0);
    }
    let span = if hi > lo { hi - lo } else { lo.abs().max(1e-3) };
    let pad = 0.05 * span;
    let top_room = if show_stages { 0.12 * span } else { 0.0 };
    (lo - pad, hi + pad + top_room)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_name_too_wide_for_its_region_is_shortened() {
        let fits = |s: &str| s.chars().count() <= 6;
        assert_eq!(shorten_to_fit("grpo1", fits).as_deref(), Some("grpo1"));
        assert_eq!(shorten_to_fit("cold_start", fits).as_deref(), Some("cold_…"));
        assert_eq!(shorten_to_fit("cold_start", |_| false), None);
        assert_eq!(shorten_to_fit("", |_| true), None);
    }

    #[test]
    fn accuracies_span_zero_to_one_and_stage_names_get_room_on_top() {
        let p = |y: f64| Point {
            x: 0.0,
            y,
            stage: 0,
            std: None,
        };
        let (lo, hi) = y_range(&[p(0.4), p(0.6)], Mark::Points, false);
        assert!((lo + 0.05).abs() < 1e-12 && (hi - 1.05).abs() < 1e-12, "{lo} {hi}");
        let (lo, hi) = y_range(&[p(0.0), p(10.0)], Mark::Line { smooth: true }, true);
        assert!((lo + 0.5).abs() < 1e-12 && (hi - 11.7).abs() < 1e-12, "{lo} {hi}");
    }
}
