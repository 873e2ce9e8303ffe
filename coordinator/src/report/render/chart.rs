//! Inline SVG line charts drawn in Rust: nice axes, time ticks, event markers, no scripts.

use std::fmt::{self, Write as _};

use super::format::finite;
use super::html::esc;

/// Chart geometry, in SVG user units (the SVG scales to its container).
const W: f64 = 860.0;
const H: f64 = 230.0;
const TOP: f64 = 26.0;
/// Baseline of the unit labels above each value axis.
const UNIT_Y: f64 = 12.0;
const BOTTOM: f64 = 28.0;
const LEFT: f64 = 58.0;

/// One line on a chart: `(seconds since start, value)` points.
pub(super) struct Series {
    pub label: &'static str,
    /// CSS colour class (`c1`..`c5`), styled by the page.
    pub class: &'static str,
    /// Plotted against the right-hand axis.
    pub right: bool,
    pub points: Vec<(f64, f64)>,
}

/// A line chart over run time with a left value axis and an optional right one.
pub(super) struct Chart {
    pub title: &'static str,
    pub left_unit: &'static str,
    pub right_unit: Option<&'static str>,
    pub series: Vec<Series>,
}

/// A value axis from 0 to `top`, ticks every `step`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Axis {
    top: f64,
    step: f64,
}

impl Axis {
    /// An axis from 0 that covers `max` with about four "nice" steps (1, 2, 2.5, 5 × 10ⁿ).
    fn for_max(max: f64) -> Axis {
        let max = if max.is_finite() && max > 0.0 {
            max
        } else {
            1.0
        };
        let step = nice_step(max / 4.0);
        let top = (max / step - 1e-9).ceil().max(1.0) * step;
        Axis { top, step }
    }

    fn ticks(&self) -> impl Iterator<Item = f64> + '_ {
        let n = (self.top / self.step).round() as usize;
        (0..=n).map(|i| i as f64 * self.step)
    }

    /// A tick label: compact (`12k`, `1.5M`) for large values, with as many
    /// decimals as the step needs.
    fn label(&self, v: f64) -> String {
        let (scale, suffix) = if self.top >= 1e6 {
            (1e6, "M")
        } else if self.top >= 1e4 {
            (1e3, "k")
        } else {
            (1.0, "")
        };
        let step = self.step / scale;
        let decimals = (0..6)
            .find(|&d| {
                let s = step * 10f64.powi(d);
                (s - s.round()).abs() < 1e-6
            })
            .unwrap_or(6) as usize;
        if v == 0.0 {
            return "0".to_owned();
        }
        format!("{:.decimals$}{suffix}", v / scale)
    }
}

fn nice_step(raw: f64) -> f64 {
    let mag = 10f64.powf(raw.log10().floor());
    let frac = raw / mag;
    let nice = if frac <= 1.0 {
        1.0
    } else if frac <= 2.0 {
        2.0
    } else if frac <= 2.5 {
        2.5
    } else if frac <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// A time-axis step in whole seconds giving at most about eight ticks.
fn time_step(span: f64) -> f64 {
    const STEPS: [f64; 16] = [
        1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0,
        14400.0, 21600.0,
    ];
    STEPS
        .iter()
        .copied()
        .find(|s| span / s <= 8.0)
        .unwrap_or_else(|| (span / 8.0 / 86400.0).ceil() * 86400.0)
}

/// Long series are drawn from at most this many buckets (about one per pixel).
const MAX_BUCKETS: usize = 800;

/// Thins a long series for drawing: each of at most `buckets` runs of
/// consecutive points keeps only its lowest and highest point (in time
/// order), so spikes and dips survive while the path stays small.
fn decimate(points: &[(f64, f64)], buckets: usize) -> Vec<(f64, f64)> {
    if points.len() <= 2 * buckets {
        return points.to_vec();
    }
    let size = points.len().div_ceil(buckets);
    let mut out = Vec::with_capacity(2 * buckets);
    for chunk in points.chunks(size) {
        let by_value = |a: &&(f64, f64), b: &&(f64, f64)| finite(a.1).total_cmp(&finite(b.1));
        let lo = chunk.iter().enumerate().min_by(|a, b| by_value(&a.1, &b.1));
        let hi = chunk.iter().enumerate().max_by(|a, b| by_value(&a.1, &b.1));
        if let (Some((i, lo)), Some((j, hi))) = (lo, hi) {
            match i.cmp(&j) {
                std::cmp::Ordering::Less => out.extend([*lo, *hi]),
                std::cmp::Ordering::Greater => out.extend([*hi, *lo]),
                std::cmp::Ordering::Equal => out.push(*lo),
            }
        }
    }
    out
}

/// Seconds since the start as `42s`, or `m:ss` / `h:mm:ss` for long runs.
pub(super) fn clock(t: u64, long: bool) -> String {
    if !long {
        return format!("{t}s");
    }
    let (h, m, s) = (t / 3600, t / 60 % 60, t % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

impl Chart {
    /// The chart as an `<svg>` element; `events` are `(seconds, text)` markers.
    /// Without any points it is an empty frame saying so.
    pub(super) fn svg(&self, events: &[(f64, String)]) -> String {
        let mut out = String::with_capacity(4096);
        self.write_svg(&mut out, events)
            .expect("writing to a String cannot fail");
        out
    }

    fn write_svg(&self, out: &mut String, events: &[(f64, String)]) -> fmt::Result {
        let right_margin = if self.right_unit.is_some() {
            58.0
        } else {
            18.0
        };
        let (x0, x1) = (LEFT, W - right_margin);
        let (y0, y1) = (H - BOTTOM, TOP);
        writeln!(
            out,
            "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\">",
            esc(self.title)
        )?;
        let points = || self.series.iter().flat_map(|s| s.points.iter());
        if points().next().is_none() {
            writeln!(
                out,
                "<rect class=\"axis\" x=\"{x0}\" y=\"{y1}\" width=\"{}\" height=\"{}\" fill=\"none\"/>",
                x1 - x0,
                y0 - y1
            )?;
            writeln!(
                out,
                "<text class=\"empty\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">No timeline data</text>\n</svg>",
                (x0 + x1) / 2.0,
                (y0 + y1) / 2.0
            )?;
            return Ok(());
        }

        // Domains.
        let t_min = points().map(|p| finite(p.0)).fold(f64::INFINITY, f64::min);
        let t_max = points()
            .map(|p| finite(p.0))
            .fold(f64::NEG_INFINITY, f64::max);
        let (t_min, t_max) = if t_max > t_min {
            (t_min, t_max)
        } else {
            (t_min, t_min + 1.0)
        };
        let max_of = |right: bool| {
            self.series
                .iter()
                .filter(|s| s.right == right)
                .flat_map(|s| s.points.iter().map(|p| finite(p.1)))
                .fold(0.0, f64::max)
        };
        let left = Axis::for_max(max_of(false));
        let right = Axis::for_max(max_of(true));
        let sx = |t: f64| x0 + (finite(t) - t_min) / (t_max - t_min) * (x1 - x0);
        let sy = |axis: &Axis, v: f64| y0 - finite(v).clamp(0.0, axis.top) / axis.top * (y0 - y1);

        // Grid and left axis labels.
        for v in left.ticks() {
            let y = sy(&left, v);
            writeln!(
                out,
                "<line class=\"grid\" x1=\"{x0}\" x2=\"{x1}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>"
            )?;
            writeln!(
                out,
                "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                x0 - 6.0,
                y + 4.0,
                left.label(v)
            )?;
        }
        writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"start\">{}</text>",
            4.0,
            UNIT_Y,
            esc(self.left_unit)
        )?;
        if let Some(unit) = self.right_unit {
            for v in right.ticks() {
                writeln!(
                    out,
                    "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"start\">{}</text>",
                    x1 + 6.0,
                    sy(&right, v) + 4.0,
                    right.label(v)
                )?;
            }
            writeln!(
                out,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
                W - 4.0,
                UNIT_Y,
                esc(unit)
            )?;
        }

        // Time axis.
        writeln!(
            out,
            "<line class=\"axis\" x1=\"{x0}\" x2=\"{x1}\" y1=\"{y0}\" y2=\"{y0}\"/>"
        )?;
        let step = time_step(t_max - t_min);
        let long = t_max >= 120.0;
        let mut t = (t_min / step).ceil() * step;
        while t <= t_max + 1e-9 {
            let x = sx(t);
            writeln!(
                out,
                "<line class=\"axis\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{y0}\" y2=\"{}\"/>",
                y0 + 4.0
            )?;
            writeln!(
                out,
                "<text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                y0 + 17.0,
                clock(t as u64, long)
            )?;
            t += step;
        }

        // Events: dashed verticals with a hover tooltip.
        for (t, e) in events {
            let x = sx(*t);
            writeln!(
                out,
                "<g><title>{}: {}</title><line class=\"hit\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{y1}\" y2=\"{y0}\"/>\
<line class=\"event\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{y1}\" y2=\"{y0}\"/></g>",
                clock(*t as u64, long),
                esc(e)
            )?;
        }

        // Series.
        for s in &self.series {
            let axis = if s.right { &right } else { &left };
            match decimate(&s.points, MAX_BUCKETS).as_slice() {
                [] => {}
                [(t, v)] => writeln!(
                    out,
                    "<circle class=\"{}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\"><title>{}</title></circle>",
                    s.class,
                    sx(*t),
                    sy(axis, *v),
                    esc(s.label)
                )?,
                pts => {
                    write!(out, "<path class=\"series {}\" d=\"", s.class)?;
                    for (i, (t, v)) in pts.iter().enumerate() {
                        write!(
                            out,
                            "{}{:.1},{:.1}",
                            if i == 0 { "M" } else { " L" },
                            sx(*t),
                            sy(axis, *v)
                        )?;
                    }
                    writeln!(out, "\"><title>{}</title></path>", esc(s.label))?;
                }
            }
        }
        writeln!(out, "</svg>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_series_are_thinned_but_keep_spikes() {
        let pts: Vec<(f64, f64)> = (0..10_000)
            .map(|t| (t as f64, if t == 5_003 { 99.0 } else { 1.0 }))
            .collect();
        let thin = decimate(&pts, 100);
        assert!(thin.len() <= 200, "{}", thin.len());
        assert!(thin.contains(&(5_003.0, 99.0)));
        assert!(thin.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(decimate(&pts[..50], 100).len(), 50);
    }

    #[test]
    fn axes_are_nice() {
        assert_eq!(
            Axis::for_max(0.0),
            Axis {
                top: 1.0,
                step: 0.25
            }
        );
        assert_eq!(
            Axis::for_max(870.0),
            Axis {
                top: 1000.0,
                step: 250.0
            }
        );
        assert_eq!(
            Axis::for_max(100.0),
            Axis {
                top: 100.0,
                step: 25.0
            }
        );
        assert_eq!(
            Axis::for_max(3.0),
            Axis {
                top: 3.0,
                step: 1.0
            }
        );
        let a = Axis::for_max(870.0);
        assert_eq!(
            a.ticks().map(|v| a.label(v)).collect::<Vec<_>>(),
            ["0", "250", "500", "750", "1000"]
        );
        let a = Axis::for_max(0.0);
        assert_eq!(a.label(0.25), "0.25");
        let a = Axis::for_max(45_000.0);
        assert_eq!(
            a.ticks().map(|v| a.label(v)).collect::<Vec<_>>(),
            ["0", "20k", "40k", "60k"]
        );
        assert_eq!(time_step(9.0), 2.0);
        assert_eq!(time_step(600.0), 120.0);
        assert_eq!(clock(75, false), "75s");
        assert_eq!(clock(75, true), "1:15");
        assert_eq!(clock(3723, true), "1:02:03");
    }
}
