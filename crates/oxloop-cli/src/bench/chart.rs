//! The SVG chart of `oxloop bench --chart`. What tells the loops apart, not what the
//! kernel shares among them (on loopback the kernel's TCP work is most of every echo
//! server's CPU, so throughput ratios all sit near 1):
//!
//! 1. user-space instructions per echoed message, counted by callgrind, one bar per
//!    server, each labelled with its ratio to the raw epoll server and to tokio;
//! 2. server user CPU per message for each echo load, one group of bars per load,
//!    the legend in its own column beside the plot;
//! 3. the in-process workloads: tokio's time over oxloop's.
//!
//! A panel whose scenario was not run is left out.

use super::report::{Report, Scenario};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::io;
use std::path::Path;

const WIDTH: u32 = 1200;
const LEGEND_WIDTH: u32 = 170;

fn err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("chart: {e}"))
}

/// Every server's colour, the same in every panel.
fn color(servers: &[String], name: &str) -> RGBColor {
    const COLORS: [RGBColor; 8] = [
        RGBColor(120, 120, 120), // raw-epoll: grey, the limit
        RGBColor(31, 119, 180),  // oxloop
        RGBColor(44, 160, 44),   // async
        RGBColor(214, 39, 40),   // tokio
        RGBColor(148, 103, 189), // smol
        RGBColor(255, 127, 14),  // libuv
        RGBColor(140, 86, 75),
        RGBColor(23, 190, 207),
    ];
    let i = servers.iter().position(|s| s == name).unwrap_or(0);
    COLORS[i % COLORS.len()]
}

/// The servers in the order they first appear (raw epoll first).
fn server_order(rep: &Report) -> Vec<String> {
    let mut out = vec!["raw-epoll".to_string()];
    let names = rep.scenarios.iter().flat_map(|s| {
        s.instructions
            .iter()
            .map(|r| r.server.clone())
            .chain(s.throughput.iter().map(|r| r.server.clone()))
    });
    for name in names {
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// Draws the chart to `path`.
pub fn draw(rep: &Report, path: &Path) -> io::Result<()> {
    let servers = server_order(rep);
    let instructions = rep.scenarios.iter().find(|s| !s.instructions.is_empty());
    let echo: Vec<&Scenario> = rep
        .scenarios
        .iter()
        .filter(|s| s.throughput.iter().any(|r| r.throughput_vs_raw.is_some()))
        .filter(|s| !s.id.starts_with("http"))
        .collect();
    let in_process: Vec<(String, f64)> = rep
        .scenarios
        .iter()
        .filter_map(|s| {
            s.in_process
                .as_ref()
                .map(|p| (s.id.clone(), p.speedup_vs_tokio))
        })
        .collect();

    let instr_height = instructions.map_or(0, |s| 110 + 42 * s.instructions.len() as u32);
    let echo_height = if echo.is_empty() { 0 } else { 430 };
    let inproc_height = if in_process.is_empty() {
        0
    } else {
        110 + 42 * in_process.len() as u32
    };
    let height = (instr_height + echo_height + inproc_height).max(200);
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let date = &rep.date[..10.min(rep.date.len())];
    let (top, rest) = root.split_vertically(instr_height);
    let (middle, bottom) = rest.split_vertically(echo_height);
    if let Some(s) = instructions {
        let rows: Vec<(String, f64, String)> = s
            .instructions
            .iter()
            .map(|r| {
                let mut label = format!("{:.0}", r.per_message);
                let ratios: Vec<String> = [("raw", r.vs_raw), ("tokio", r.vs_tokio)]
                    .into_iter()
                    .filter(|(name, _)| match *name {
                        "raw" => r.server != "raw-epoll",
                        other => r.server != other,
                    })
                    .filter_map(|(name, v)| v.map(|v| format!("{v:.2}× {name}")))
                    .collect();
                if !ratios.is_empty() {
                    label += &format!("  ({})", ratios.join(", "));
                }
                (r.server.clone(), r.per_message, label)
            })
            .collect();
        horizontal_bars(
            &top,
            &format!(
                "oxloop bench {date}: user-space instructions per echoed message (callgrind, 1 connection, 64 B; fewer is better)"
            ),
            &rows,
            &|name| color(&servers, name),
        )?;
    }
    if !echo.is_empty() {
        echo_panel(&middle, &echo, &servers)?;
    }
    if !in_process.is_empty() {
        let rows: Vec<(String, f64, String)> = in_process
            .iter()
            .map(|(id, v)| (id.clone(), *v, format!("{v:.1}× faster than tokio")))
            .collect();
        horizontal_bars(
            &bottom,
            "in process: tokio's time ÷ oxloop's for the same work (above 1: oxloop is faster)",
            &rows,
            &|_| color(&servers, "oxloop"),
        )?;
    }
    root.present().map_err(err)?;
    Ok(())
}

/// One bar per row, its value written after it; the category names on the left.
fn horizontal_bars(
    area: &DrawingArea<SVGBackend, Shift>,
    title: &str,
    rows: &[(String, f64, String)],
    color_of: &dyn Fn(&str) -> RGBColor,
) -> io::Result<()> {
    let n = rows.len().max(1);
    // Room on the right for the longest label.
    let xmax = rows.iter().map(|r| r.1).fold(1.0f64, f64::max) * 1.45;
    let names: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(120)
        .build_cartesian_2d(0f64..xmax, -0.5f64..n as f64 - 0.5)
        .map_err(err)?;
    let whole = xmax > 20.0;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(TRANSPARENT)
        .x_label_formatter(&|x: &f64| {
            if whole {
                format!("{x:.0}")
            } else {
                format!("{x:.1}")
            }
        })
        .y_labels(n)
        .y_label_formatter(&move |y: &f64| {
            let i = y.round();
            if (y - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
                // Top to bottom in row order.
                names[names.len() - 1 - i as usize].clone()
            } else {
                String::new()
            }
        })
        .y_label_style(("sans-serif", 15))
        .draw()
        .map_err(err)?;
    let row_y = |i: usize| (n - 1 - i) as f64;
    chart
        .draw_series(rows.iter().enumerate().map(|(i, (name, v, _))| {
            let y = row_y(i);
            Rectangle::new([(0.0, y - 0.32), (*v, y + 0.32)], color_of(name).filled())
        }))
        .map_err(err)?;
    let label_style = TextStyle::from(("sans-serif", 15).into_font())
        .pos(Pos::new(HPos::Left, VPos::Center))
        .color(&BLACK);
    chart
        .draw_series(rows.iter().enumerate().map(|(i, (_, v, label))| {
            Text::new(
                label.clone(),
                (*v + xmax * 0.01, row_y(i)),
                label_style.clone(),
            )
        }))
        .map_err(err)?;
    Ok(())
}

/// Server user CPU per message for each echo load, grouped by load; the legend has
/// its own column, so it never covers a bar.
fn echo_panel(
    area: &DrawingArea<SVGBackend, Shift>,
    scenarios: &[&Scenario],
    servers: &[String],
) -> io::Result<()> {
    let (plot, legend) = area.split_horizontally(WIDTH - LEGEND_WIDTH);
    let cats: Vec<String> = scenarios.iter().map(|s| s.id.clone()).collect();
    let shown: Vec<&String> = servers
        .iter()
        .filter(|name| {
            scenarios
                .iter()
                .any(|s| s.throughput.iter().any(|r| &&r.server == name))
        })
        .collect();
    let n = cats.len().max(1);
    let ymax = scenarios
        .iter()
        .flat_map(|s| s.throughput.iter().map(|r| r.user_ns_per_msg))
        .fold(1.0f64, f64::max)
        * 1.1;
    let labels = cats.clone();
    let mut chart = ChartBuilder::on(&plot)
        .caption(
            "server user CPU per message, ns (from /proc, 10 ms ticks: rough; the kernel's share is left out)",
            ("sans-serif", 17),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..n as f64 - 0.5, 0f64..ymax)
        .map_err(err)?;
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
        .y_desc("ns per message")
        .light_line_style(TRANSPARENT)
        .y_label_formatter(&|y: &f64| format!("{y:.0}"))
        .draw()
        .map_err(err)?;
    let width = 0.8 / shown.len().max(1) as f64;
    for (j, name) in shown.iter().enumerate() {
        let c = color(servers, name);
        let bars = scenarios.iter().enumerate().filter_map(|(i, s)| {
            let r = s.throughput.iter().find(|r| &&r.server == name)?;
            let x0 = i as f64 - 0.4 + j as f64 * width;
            Some(Rectangle::new(
                [(x0, 0.0), (x0 + width * 0.9, r.user_ns_per_msg)],
                c.filled(),
            ))
        });
        chart.draw_series(bars).map_err(err)?;
    }
    for (j, name) in shown.iter().enumerate() {
        let y = 60 + 26 * j as i32;
        legend
            .draw(&Rectangle::new(
                [(10, y - 7), (24, y + 7)],
                color(servers, name).filled(),
            ))
            .map_err(err)?;
        legend
            .draw(&Text::new(
                name.to_string(),
                (32, y),
                TextStyle::from(("sans-serif", 15).into_font())
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            ))
            .map_err(err)?;
    }
    Ok(())
}
