//! The sweep's Pareto plot (test accuracy against total bytes, log x): every
//! configuration a point, the Pareto front a line, dense and the seed's
//! configuration marked. One drawing routine for every plotters backend, so
//! the SVG and the PNG show the same thing.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::sweep::{SweepPoint, SweepRow};

fn human_bytes(b: f64) -> String {
    match b {
        b if b >= 1e9 => format!("{:.1} GB", b / 1e9),
        b if b >= 1e6 => format!("{:.1} MB", b / 1e6),
        b if b >= 1e3 => format!("{:.0} kB", b / 1e3),
        b => format!("{b:.0} B"),
    }
}

/// Draws the plot of `rows` on `root`.
pub fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, rows: &[SweepRow], title: &str) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let bytes = || rows.iter().map(|r| r.bytes_total.max(1) as f64);
    let (min_b, max_b) = (bytes().fold(f64::INFINITY, f64::min), bytes().fold(1.0, f64::max));
    let accs = || rows.iter().map(|r| 100.0 * r.test_accuracy);
    let lo = (accs().fold(f64::INFINITY, f64::min) - 2.0).floor();
    let hi = (accs().fold(f64::NEG_INFINITY, f64::max) + 1.0).ceil().min(100.0);
    let (lo, hi) = if lo.is_finite() && hi > lo { (lo, hi) } else { (0.0, 100.0) };
    let x = (min_b.min(max_b) / 2.0)..(max_b * 2.0);
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(60)
        .build_cartesian_2d(x.log_scale(), lo..hi)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("bytes on the wire (all ranks, log scale)")
        .y_desc("test accuracy (%)")
        .x_label_formatter(&|v| human_bytes(*v))
        .draw()
        .map_err(e)?;
    let mut front: Vec<(f64, f64)> =
        rows.iter().filter(|r| r.pareto).map(|r| (r.bytes_total.max(1) as f64, 100.0 * r.test_accuracy)).collect();
    front.sort_by(|a, b| a.0.total_cmp(&b.0));
    chart
        .draw_series(LineSeries::new(front, BLACK.mix(0.6).stroke_width(2)))
        .map_err(e)?
        .label("Pareto front")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.mix(0.6).stroke_width(2)));
    let pt = |r: &SweepRow| (r.bytes_total.max(1) as f64, 100.0 * r.test_accuracy);
    let sparse: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| matches!(r.point, SweepPoint::Sparse { .. } | SweepPoint::Budget { .. }))
        .map(pt)
        .collect();
    chart
        .draw_series(sparse.into_iter().map(|p| Circle::new(p, 4, BLUE.mix(0.7).filled())))
        .map_err(e)?
        .label("sparse configurations")
        .legend(|(x, y)| Circle::new((x + 9, y), 4, BLUE.mix(0.7).filled()));
    for (which, name, color) in [(SweepPoint::Dense, "dense", RED), (SweepPoint::Seed, "seed configuration", GREEN)] {
        let marked: Vec<(f64, f64)> = rows.iter().filter(|r| r.point == which).map(pt).collect();
        chart
            .draw_series(marked.into_iter().map(|p| TriangleMarker::new(p, 9, color.filled())))
            .map_err(e)?
            .label(name)
            .legend(move |(x, y)| TriangleMarker::new((x + 9, y), 6, color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)
}

/// Writes the plot as SVG.
pub fn write_svg(rows: &[SweepRow], title: &str, path: &Path) -> Result<(), String> {
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    draw(&root, rows, title)
}
