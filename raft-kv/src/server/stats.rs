//! `/v2/stats/self` and `/v2/stats/leader`, with Go's spelling of times and durations.
//!
//! etcd renders these from Go structs, so clients see Go's formats: a start time is
//! RFC 3339 in UTC with up to nine fractional digits and trailing zeros trimmed
//! (`2026-11-26T19:26:59.455025792Z`), an uptime is a Go duration (`7m19.17s`,
//! `950ms`). Counters are kept in atomics and read without locks; follower latencies
//! (leader only) are summarised as etcd does (current, average, standard deviation,
//! minimum, maximum, in milliseconds).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Go's `time.Duration.String()`.
pub fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    let trim = |text: String| -> String {
        if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            text
        }
    };
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!(
            "{}µs",
            trim(format!("{}.{:03}", nanos / 1_000, nanos % 1_000))
        );
    }
    if nanos < 1_000_000_000 {
        return format!(
            "{}ms",
            trim(format!("{}.{:06}", nanos / 1_000_000, nanos % 1_000_000))
        );
    }
    let total_seconds = nanos / 1_000_000_000;
    let fraction = nanos % 1_000_000_000;
    let hours = total_seconds / 3600;
    let minutes = (total_seconds % 3600) / 60;
    let seconds = total_seconds % 60;
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&trim(format!("{seconds}.{fraction:09}")));
    out.push('s');
    out
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's
/// civil-from-days).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// RFC 3339 in UTC with Go's `RFC3339Nano` fraction (trailing zeros trimmed).
pub fn rfc3339_nano(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs() as i64;
    let nanos = since.subsec_nanos();
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let rem = seconds.rem_euclid(86_400);
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    );
    if nanos > 0 {
        let fraction = format!("{nanos:09}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// The body of `/v2/stats/self`.
#[derive(Serialize)]
pub struct SelfStats {
    /// Member name.
    pub name: String,
    /// Member id (hex).
    pub id: String,
    /// `StateLeader` or `StateFollower`.
    pub state: &'static str,
    /// When this member started.
    #[serde(rename = "startTime")]
    pub start_time: String,
    /// Who leads and since when.
    #[serde(rename = "leaderInfo")]
    pub leader_info: LeaderInfo,
    /// Append requests received.
    #[serde(rename = "recvAppendRequestCnt")]
    pub recv_append_request_count: u64,
    /// Append requests sent.
    #[serde(rename = "sendAppendRequestCnt")]
    pub send_append_request_count: u64,
}

/// `leaderInfo` of [`SelfStats`].
#[derive(Serialize)]
pub struct LeaderInfo {
    /// Leader id (hex, `0` when none).
    pub leader: String,
    /// How long the current leader has led, as this member saw it (Go duration).
    pub uptime: String,
    /// When this member first saw the current leader.
    #[serde(rename = "startTime")]
    pub start_time: String,
}

/// Latency summary of one follower, in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LatencyStats {
    /// Most recent sample.
    pub current: f64,
    /// Mean.
    pub average: f64,
    /// Standard deviation.
    #[serde(rename = "standardDeviation")]
    pub standard_deviation: f64,
    /// Smallest sample.
    pub minimum: f64,
    /// Largest sample.
    pub maximum: f64,
    #[serde(skip)]
    count: u64,
    #[serde(skip)]
    sum_of_squares: f64,
}

impl LatencyStats {
    /// Adds one round-trip sample.
    pub fn record(&mut self, sample: Duration) {
        let ms = sample.as_secs_f64() * 1000.0;
        self.count += 1;
        self.current = ms;
        if self.count == 1 {
            self.minimum = ms;
            self.maximum = ms;
            self.average = ms;
            self.sum_of_squares = ms * ms;
        } else {
            self.minimum = self.minimum.min(ms);
            self.maximum = self.maximum.max(ms);
            let n = self.count as f64;
            self.average += (ms - self.average) / n;
            self.sum_of_squares += ms * ms;
        }
        let n = self.count as f64;
        let variance = (self.sum_of_squares / n - self.average * self.average).max(0.0);
        self.standard_deviation = variance.sqrt();
    }
}

/// Success/failure counts of one follower.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FollowerCounts {
    /// Messages that failed to reach the follower.
    pub fail: u64,
    /// Messages delivered.
    pub success: u64,
}

/// One follower in [`LeaderStats`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct FollowerStats {
    /// Round-trip latency summary.
    pub latency: LatencyStats,
    /// Delivery counts.
    pub counts: FollowerCounts,
}

/// The body of `/v2/stats/leader`.
#[derive(Serialize)]
pub struct LeaderStats {
    /// Leader id (hex).
    pub leader: String,
    /// Followers by id (hex).
    pub followers: BTreeMap<String, FollowerStats>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let table = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(5), "5ns"),
            (Duration::from_nanos(1_500), "1.5µs"),
            (Duration::from_millis(950), "950ms"),
            (Duration::from_micros(1_250), "1.25ms"),
            (Duration::from_nanos(7_950_612_809), "7.950612809s"),
            (Duration::from_millis(439_170), "7m19.17s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_millis(3_723_500), "1h2m3.5s"),
            (Duration::from_secs(60), "1m0s"),
        ];
        for (d, want) in table {
            assert_eq!(go_duration(d), want, "{d:?}");
        }
    }

    #[test]
    fn rfc3339() {
        let t = UNIX_EPOCH + Duration::new(1_795_714_019, 455_025_792);
        assert_eq!(rfc3339_nano(t), "2026-11-26T17:26:59.455025792Z");
        let t = UNIX_EPOCH + Duration::new(951_782_400, 500_000_000);
        assert_eq!(rfc3339_nano(t), "2000-02-29T00:00:00.5Z");
        assert_eq!(rfc3339_nano(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn latency_summary() {
        let mut l = LatencyStats::default();
        for ms in [1u64, 3, 2] {
            l.record(Duration::from_millis(ms));
        }
        assert_eq!(l.current, 2.0);
        assert_eq!(l.minimum, 1.0);
        assert_eq!(l.maximum, 3.0);
        assert!((l.average - 2.0).abs() < 1e-9);
        assert!((l.standard_deviation - (2.0f64 / 3.0).sqrt()).abs() < 1e-9);
        let json = serde_json::to_value(FollowerStats::default()).unwrap();
        let mut fields: Vec<_> = json["latency"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        fields.sort();
        assert_eq!(
            fields,
            [
                "average",
                "current",
                "maximum",
                "minimum",
                "standardDeviation"
            ]
        );
    }
}
