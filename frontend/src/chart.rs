//! The Overview's live chart: samples of the etcd and commit indexes as the
//! event stream and the page's refetches deliver them, the writes per second
//! they imply, and the SVG polyline points that draw the last minute. Pure:
//! no clock and no IO (the browser passes the times), so the server renders
//! the same empty chart the browser starts from.

/// How much history the chart keeps and draws, in seconds.
pub const WINDOW_SECS: f64 = 60.0;
/// Samples closer together than this (seconds) merge into one.
const MERGE_SECS: f64 = 0.25;
/// Most samples kept, whatever the clock does.
const MAX_SAMPLES: usize = 1_000;
/// Width of a chart's drawing area, in SVG units.
pub const WIDTH: f64 = 300.0;
/// Height of a chart's drawing area, in SVG units.
pub const HEIGHT: f64 = 60.0;

/// What the page knew at one moment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Seconds on the browser's monotonic clock.
    pub at: f64,
    /// The key space's etcd index (every write raises it by one).
    pub etcd_index: u64,
    /// The commit index, when a refetch of the Overview reported it.
    pub commit: Option<u64>,
}

/// Adds `s`, merging it into the newest sample when they are close, and
/// drops what fell out of the window.
pub fn push(samples: &mut Vec<Sample>, s: Sample) {
    match samples.last_mut() {
        Some(last) if s.at >= last.at && s.at - last.at < MERGE_SECS => {
            last.etcd_index = last.etcd_index.max(s.etcd_index);
            last.commit = match (last.commit, s.commit) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        _ => samples.push(s),
    }
    let oldest = s.at - WINDOW_SECS - 1.0;
    samples.retain(|x| x.at >= oldest && x.at <= s.at);
    let extra = samples.len().saturating_sub(MAX_SAMPLES);
    samples.drain(..extra);
}

/// The highest etcd index seen at or before `t`.
fn index_at(samples: &[Sample], t: f64) -> Option<u64> {
    samples
        .iter()
        .filter(|s| s.at <= t)
        .map(|s| s.etcd_index)
        .max()
}

/// Writes in each whole second of the window that ends at the newest sample:
/// `(seconds before the newest sample, writes)`, oldest first; seconds before
/// the first sample are left out.
pub fn writes_per_second(samples: &[Sample]) -> Vec<(f64, f64)> {
    let Some(end) = samples.last().map(|s| s.at) else {
        return Vec::new();
    };
    (0..WINDOW_SECS as u32)
        .rev()
        .filter_map(|ago| {
            let to = end - f64::from(ago);
            let from = index_at(samples, to - 1.0)?;
            let until = index_at(samples, to)?;
            Some((f64::from(ago), until.saturating_sub(from) as f64))
        })
        .collect()
}

/// The etcd index over the window: `(seconds before the newest sample, index)`.
pub fn etcd_series(samples: &[Sample]) -> Vec<(f64, f64)> {
    series(samples, |s| Some(s.etcd_index))
}

/// The commit index over the window, where refetches reported it.
pub fn commit_series(samples: &[Sample]) -> Vec<(f64, f64)> {
    series(samples, |s| s.commit)
}

fn series(samples: &[Sample], value: impl Fn(&Sample) -> Option<u64>) -> Vec<(f64, f64)> {
    let Some(end) = samples.last().map(|s| s.at) else {
        return Vec::new();
    };
    samples
        .iter()
        .filter_map(|s| Some((end - s.at, value(s)? as f64)))
        .collect()
}

/// SVG polyline points for `series`: the newest at the right edge, the
/// window's start at the left, values scaled between the series' own minimum
/// (bottom; zero when `from_zero`) and maximum (top).
pub fn points(series: &[(f64, f64)], from_zero: bool) -> String {
    let max = series.iter().map(|p| p.1).fold(f64::MIN, f64::max);
    let min = if from_zero {
        0.0
    } else {
        series.iter().map(|p| p.1).fold(f64::MAX, f64::min)
    };
    let span = (max - min).max(1.0);
    series
        .iter()
        .map(|&(ago, v)| {
            let x = WIDTH * (1.0 - (ago / WINDOW_SECS).clamp(0.0, 1.0));
            let y = HEIGHT * (1.0 - (v - min) / span);
            format!("{x:.1},{y:.1}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(at: f64, etcd_index: u64) -> Sample {
        Sample {
            at,
            etcd_index,
            commit: None,
        }
    }

    #[test]
    fn close_samples_merge_and_old_ones_leave() {
        let mut s = Vec::new();
        push(&mut s, at(10.0, 5));
        push(&mut s, at(10.1, 7));
        assert_eq!(s, vec![at(10.0, 7)]);
        push(
            &mut s,
            Sample {
                commit: Some(3),
                ..at(10.2, 6)
            },
        );
        assert_eq!(s[0].commit, Some(3));
        push(&mut s, at(100.0, 9));
        assert_eq!(s, vec![at(100.0, 9)], "the window is a minute");
    }

    #[test]
    fn writes_per_second_come_from_the_index() {
        let mut s = Vec::new();
        for (t, i) in [(0.0, 100), (0.5, 110), (1.0, 120), (2.0, 120), (3.0, 150)] {
            push(&mut s, at(t, i));
        }
        let w = writes_per_second(&s);
        assert_eq!(w, vec![(2.0, 20.0), (1.0, 0.0), (0.0, 30.0)]);
        assert!(writes_per_second(&[]).is_empty());
    }

    #[test]
    fn points_span_the_chart() {
        let p = points(&[(60.0, 10.0), (30.0, 15.0), (0.0, 20.0)], false);
        assert_eq!(p, "0.0,60.0 150.0,30.0 300.0,0.0");
        assert_eq!(points(&[(0.0, 0.0)], true), "300.0,60.0");
        assert_eq!(points(&[], true), "");
    }
}
