//! The SVG chart of `oxloop bench --chart`: per echo load, each peer's throughput
//! over the raw epoll limit (top) and over tokio (middle), and the in-process
//! workloads: tokio's time over oxloop's (bottom).

use super::report::Report;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::io;
use std::path::Path;

type Series = Vec<(String, Vec<Option<f64>>)>;

fn err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("chart: {e}"))
}

/// Draws the chart to `path`.
pub fn draw(rep: &Report, path: &Path) -> io::Result<()> {
    let scenarios: Vec<_> = rep
        .scenarios
        .iter()
        .filter(|s| s.throughput.iter().any(|r| r.throughput_vs_raw.is_some()))
        .collect();
    let cats: Vec<String> = scenarios.iter().map(|s| s.id.clone()).collect();
    let mut servers: Vec<String> = Vec::new();
    for s in &scenarios {
        for r in &s.throughput {
            if r.server != "raw-epoll" && !servers.contains(&r.server) {
                servers.push(r.server.clone());
            }
        }
    }
    let pick = |f: &dyn Fn(&super::report::ThroughputRow) -> Option<f64>| -> Series {
        servers
            .iter()
            .map(|name| {
                let vals = scenarios
                    .iter()
                    .map(|s| s.throughput.iter().find(|r| &r.server == name).and_then(f))
                    .collect();
                (name.clone(), vals)
            })
            .collect()
    };
    let vs_raw = pick(&|r| r.throughput_vs_raw);
    let vs_tokio: Series = pick(&|r| r.throughput_vs_tokio)
        .into_iter()
        .filter(|(n, _)| n != "tokio" && !n.contains("(tokio)"))
        .collect();
    let (mut in_cats, mut in_vals) = (Vec::new(), Vec::new());
    for s in rep.scenarios.iter() {
        if let Some(p) = &s.in_process {
            in_cats.push(s.id.clone());
            in_vals.push(Some(p.speedup_vs_tokio));
        }
    }
    let in_process: Series = vec![("oxloop".to_string(), in_vals)];
    let root = SVGBackend::new(path, (1200, 1100)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (top, rest) = root.split_vertically(400);
    let (middle, bottom) = rest.split_vertically(400);
    panel(
        &top,
        &format!(
            "oxloop bench {}: throughput ÷ raw epoll (1 = the hand-written limit)",
            &rep.date[..10.min(rep.date.len())]
        ),
        &cats,
        &vs_raw,
        &servers,
    )?;
    panel(
        &middle,
        "throughput ÷ tokio current_thread (above 1: faster than tokio)",
        &cats,
        &vs_tokio,
        &servers,
    )?;
    panel(
        &bottom,
        "in process: tokio's time ÷ oxloop's for the same work (above 1: oxloop is faster)",
        &in_cats,
        &in_process,
        &servers,
    )?;
    root.present().map_err(err)?;
    Ok(())
}

fn panel(
    area: &DrawingArea<SVGBackend, Shift>,
    title: &str,
    cats: &[String],
    series: &Series,
    all_servers: &[String],
) -> io::Result<()> {
    let n = cats.len().max(1);
    let ymax = series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten())
        .fold(1.0f64, |a, &b| a.max(b))
        * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(-0.5f64..n as f64 - 0.5, 0f64..ymax)
        .map_err(err)?;
    let labels = cats.to_vec();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&move |x: &f64| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
                labels[i as usize].clone()
            } else {
                String::new()
            }
        })
        .y_desc("ratio")
        .draw()
        .map_err(err)?;
    let m = series.len().max(1) as f64;
    let width = 0.8 / m;
    for (j, (name, vals)) in series.iter().enumerate() {
        let color = Palette99::pick(all_servers.iter().position(|s| s == name).unwrap_or(j));
        let bars = vals.iter().enumerate().filter_map(|(i, v)| {
            v.map(|v| {
                let x0 = i as f64 - 0.4 + j as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width * 0.9, v)], color.filled())
            })
        });
        chart
            .draw_series(bars)
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .draw_series(LineSeries::new(
            [(-0.5, 1.0), (n as f64 - 0.5, 1.0)],
            BLACK.stroke_width(1),
        ))
        .map_err(err)?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(err)?;
    Ok(())
}
