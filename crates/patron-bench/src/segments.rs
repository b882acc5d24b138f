//! The `segments` scenario of `patron-load`: times `CountSegmentMembers`, listing every member
//! through `ListSegmentMembers`, and `PreviewSegment` for a fixed set of segments, with the `true`
//! rule (`everyone`) as the evaluation floor measured in the same run.
//!
//! It creates the stored segments of [`SEGMENTS`] (an existing segment with the same rule is
//! reused, so the scenario can run twice against one server), then, `repetitions` times, for each
//! segment in turn: one `CountSegmentMembers`, then every page of `ListSegmentMembers` (checking
//! that the ids ascend and that as many arrive as the count said); rounds interleave the segments
//! so that drift on a shared machine spreads over all of them. Then one `PreviewSegment` of each
//! rule. With a server pid it also reads the server's CPU time (utime + stime, `/proc/PID/stat`)
//! around every call, so CPU ÷ wall time shows how many cores a call kept busy; its own CPU time
//! (the client's share of the shared machine) is read the same way.
//!
//! One JSON object per segment.

use std::time::{Duration, Instant};

use patron_proto::segmentation::v1 as pb;
use patron_proto::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
use serde_json::{Value, json};
use tonic::Code;
use tonic::transport::Channel;

/// One segment of the scenario.
#[derive(Debug, Clone, Copy)]
pub struct BenchSegment {
    pub id: &'static str,
    pub rule: &'static str,
    /// Read-only segment of the server (not created).
    pub built_in: bool,
    pub about: &'static str,
}

/// The scenario's segments, in the order they are created and measured (a segment named by
/// `in_segment` comes before the one naming it). The purchase windows are relative to the day of
/// the run; `scripts/bench-segments.sh` has the SQL equivalents.
pub const SEGMENTS: &[BenchSegment] = &[
    BenchSegment {
        id: "everyone",
        rule: "true",
        built_in: false,
        about: "the cheapest rule: the evaluation floor (scan, per-customer setup, answer)",
    },
    BenchSegment {
        id: "lapsed-big-spenders",
        rule: "purchases.total_revenue >= 50000 && purchases.count(90) == 0",
        built_in: false,
        about: "a summary total and a purchase window",
    },
    BenchSegment {
        id: "recent",
        rule: "purchases.count(30) >= 1",
        built_in: false,
        about: "a short purchase window",
    },
    BenchSegment {
        id: "active-500d",
        rule: "purchases.count(500) >= 1",
        built_in: false,
        about: "a long purchase window",
    },
    BenchSegment {
        id: "high-clv",
        rule: "value.predicted_clv >= 5000",
        built_in: false,
        about: "a model score (needs an active value model; 5,000 minor units selects about 9 % \
                of the ingest example's customers, where 10,000 selects none)",
    },
    BenchSegment {
        id: "lapsed-big-spenders-2y",
        rule: "in_segment(\"lapsed-big-spenders\") && purchases.revenue(730) >= 50000",
        built_in: false,
        about: "in_segment plus windowed revenue",
    },
    BenchSegment {
        id: "rfm-champions",
        rule: "rfm.segment == \"champions\"",
        built_in: true,
        about: "built-in RFM segment (scores against the active model)",
    },
];

/// How the scenario runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub repetitions: u32,
    /// ListSegmentMembers page size (1-10,000).
    pub page_size: i32,
    /// Per-call deadline.
    pub timeout: Duration,
    /// The server's pid, to read its CPU time from /proc (same machine only).
    pub server_pid: Option<u32>,
    /// Clock ticks per second of /proc/PID/stat (`getconf CLK_TCK`).
    pub clock_ticks: u32,
    /// Measure only these segments (every segment is still created); empty: all.
    pub only: Vec<String>,
}

/// Milliseconds of a series of runs.
#[derive(Debug, Default, Clone)]
pub struct Series(Vec<f64>);

impl Series {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64() * 1e3);
    }

    /// The median (mean of the middle two for an even number of runs).
    pub fn median(&self) -> Option<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(v[n / 2]),
            _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
        }
    }

    pub fn to_json(&self) -> Value {
        let min = self.0.iter().copied().reduce(f64::min);
        let max = self.0.iter().copied().reduce(f64::max);
        json!({
            "median": self.median().map(ms),
            "min": min.map(ms),
            "max": max.map(ms),
            "runs": self.0.iter().copied().map(ms).collect::<Vec<_>>(),
        })
    }
}

/// Rounds milliseconds to 0.01 ms.
fn ms(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The server's CPU time (user + system, all threads, living and ended) in seconds.
pub fn process_cpu_seconds(pid: u32, clock_ticks: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_seconds(&stat, clock_ticks)
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line, in seconds. The command name
/// (field 2) is in brackets and may hold spaces, so fields count from the last `)`.
fn parse_cpu_seconds(stat: &str, clock_ticks: u32) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / f64::from(clock_ticks.max(1)))
}

/// Server and client CPU time accumulated by calls.
#[derive(Debug, Default)]
struct Cpu {
    server: f64,
    server_known: bool,
    client: f64,
    client_known: bool,
}

struct Meter {
    pid: Option<u32>,
    ticks: u32,
}

impl Meter {
    fn server(&self) -> Option<f64> {
        self.pid.and_then(|p| process_cpu_seconds(p, self.ticks))
    }

    fn client(&self) -> Option<f64> {
        process_cpu_seconds(std::process::id(), self.ticks)
    }

    /// Runs `f`, adding the server's and this process's CPU time to `cpu`, and returns its wall
    /// time too.
    async fn time<T, F>(&self, cpu: &mut Cpu, f: F) -> (T, Duration)
    where
        F: std::future::Future<Output = T>,
    {
        let (s0, c0) = (self.server(), self.client());
        let started = Instant::now();
        let out = f.await;
        let wall = started.elapsed();
        if let (Some(a), Some(b)) = (s0, self.server()) {
            cpu.server += b - a;
            cpu.server_known = true;
        }
        if let (Some(a), Some(b)) = (c0, self.client()) {
            cpu.client += b - a;
            cpu.client_known = true;
        }
        (out, wall)
    }
}

fn status(what: &str, s: &tonic::Status) -> String {
    format!("{what} failed: {:?}: {}", s.code(), s.message())
}

fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.set_timeout(timeout);
    r
}

/// Creates `seg` unless a segment with its id and rule exists. Returns the creation time (None
/// when it existed).
async fn ensure(
    client: &mut SegmentationServiceClient<Channel>,
    seg: &BenchSegment,
    timeout: Duration,
) -> Result<Option<Duration>, String> {
    let started = Instant::now();
    let created = client
        .create_segment(request(
            pb::CreateSegmentRequest {
                segment: Some(pb::Segment {
                    segment_id: seg.id.to_owned(),
                    display_name: seg.id.to_owned(),
                    description: format!("patron-load segments scenario: {}", seg.about),
                    rule: seg.rule.to_owned(),
                    ..Default::default()
                }),
            },
            timeout,
        ))
        .await;
    match created {
        Ok(_) => Ok(Some(started.elapsed())),
        Err(s) if s.code() == Code::AlreadyExists => {
            let existing = client
                .get_segment(request(
                    pb::GetSegmentRequest {
                        segment_id: seg.id.to_owned(),
                    },
                    timeout,
                ))
                .await
                .map_err(|s| status("GetSegment", &s))?
                .into_inner()
                .segment
                .unwrap_or_default();
            if existing.rule == seg.rule {
                Ok(None)
            } else {
                Err(format!(
                    "segment {} exists with another rule: {:?}",
                    seg.id, existing.rule
                ))
            }
        }
        Err(s) => Err(status(&format!("CreateSegment {}", seg.id), &s)),
    }
}

/// What listing every member gave.
struct Listed {
    pages: u64,
    members: u64,
    ascending: bool,
}

async fn list_all(
    client: &mut SegmentationServiceClient<Channel>,
    id: &str,
    page_size: i32,
    timeout: Duration,
) -> Result<Listed, String> {
    let mut token = String::new();
    let mut listed = Listed {
        pages: 0,
        members: 0,
        ascending: true,
    };
    let mut last: Option<String> = None;
    loop {
        let page = client
            .list_segment_members(request(
                pb::ListSegmentMembersRequest {
                    segment_id: id.to_owned(),
                    page_size,
                    page_token: token,
                },
                timeout,
            ))
            .await
            .map_err(|s| status(&format!("ListSegmentMembers {id}"), &s))?
            .into_inner();
        listed.pages += 1;
        listed.members += page.customer_ids.len() as u64;
        for c in page.customer_ids {
            if last.as_ref().is_some_and(|l| *l >= c) {
                listed.ascending = false;
            }
            last = Some(c);
        }
        if page.next_page_token.is_empty() {
            return Ok(listed);
        }
        token = page.next_page_token;
    }
}

/// Per segment, across the rounds.
#[derive(Default)]
struct Tally {
    create_ms: Option<f64>,
    counts: Vec<i64>,
    population: i64,
    count_ms: Series,
    count_cpu: Cpu,
    list_ms: Series,
    list_cpu: Cpu,
    pages: u64,
    members: Vec<u64>,
    ascending: bool,
}

fn per_call_ms(seconds: f64, known: bool, calls: u32) -> Option<f64> {
    known.then(|| ms(seconds * 1e3 / f64::from(calls.max(1))))
}

/// Runs the scenario; one JSON object per segment.
pub async fn run(channel: Channel, target: &str, opts: &Options) -> Result<Vec<Value>, String> {
    let mut client =
        SegmentationServiceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
    let meter = Meter {
        pid: opts.server_pid,
        ticks: opts.clock_ticks,
    };
    let reps = opts.repetitions.max(1);
    if let Some(unknown) = opts
        .only
        .iter()
        .find(|o| !SEGMENTS.iter().any(|s| s.id == o.as_str()))
    {
        return Err(format!("no segment {unknown:?} in the scenario"));
    }
    let measured =
        |seg: &BenchSegment| opts.only.is_empty() || opts.only.iter().any(|o| o == seg.id);
    let mut tallies: Vec<Tally> = SEGMENTS
        .iter()
        .map(|_| Tally {
            ascending: true,
            ..Tally::default()
        })
        .collect();
    for (seg, t) in SEGMENTS.iter().zip(&mut tallies) {
        if !seg.built_in {
            t.create_ms = ensure(&mut client, seg, opts.timeout)
                .await?
                .map(|d| ms(d.as_secs_f64() * 1e3));
        }
    }
    for _ in 0..reps {
        for (seg, t) in SEGMENTS.iter().zip(&mut tallies) {
            if !measured(seg) {
                continue;
            }
            let (counted, wall) = meter
                .time(
                    &mut t.count_cpu,
                    client.count_segment_members(request(
                        pb::CountSegmentMembersRequest {
                            segment_id: seg.id.to_owned(),
                        },
                        opts.timeout,
                    )),
                )
                .await;
            let counted = counted
                .map_err(|s| status(&format!("CountSegmentMembers {}", seg.id), &s))?
                .into_inner();
            t.count_ms.push(wall);
            t.counts.push(counted.count);
            t.population = counted.population;

            let (listed, wall) = meter
                .time(
                    &mut t.list_cpu,
                    list_all(&mut client, seg.id, opts.page_size, opts.timeout),
                )
                .await;
            let listed = listed?;
            t.list_ms.push(wall);
            t.pages = listed.pages;
            t.members.push(listed.members);
            t.ascending &= listed.ascending;
        }
    }
    let mut out = Vec::new();
    for (seg, t) in SEGMENTS.iter().zip(tallies) {
        if !measured(seg) {
            continue;
        }
        let mut preview_cpu = Cpu::default();
        let (previewed, wall) = meter
            .time(
                &mut preview_cpu,
                client.preview_segment(request(
                    pb::PreviewSegmentRequest {
                        rule: seg.rule.to_owned(),
                        sample_size: 10,
                    },
                    opts.timeout,
                )),
            )
            .await;
        let previewed = previewed
            .map_err(|s| status(&format!("PreviewSegment {}", seg.id), &s))?
            .into_inner();
        let count = t.counts.first().copied().unwrap_or_default();
        let counts_stable = t.counts.iter().all(|&c| c == count);
        let members_match = t
            .members
            .iter()
            .zip(&t.counts)
            .all(|(&m, &c)| i64::try_from(m).is_ok_and(|m| m == c));
        out.push(json!({
            "scenario": "segments",
            "target": target,
            "segment": seg.id,
            "rule": seg.rule,
            "built_in": seg.built_in,
            "about": seg.about,
            "time_relative": previewed.time_relative,
            "repetitions": reps,
            "population": t.population,
            "count": count,
            "counts_stable": counts_stable,
            "create_ms": t.create_ms,
            "count_ms": t.count_ms.to_json(),
            "count_server_cpu_ms_per_call":
                per_call_ms(t.count_cpu.server, t.count_cpu.server_known, reps),
            "count_client_cpu_ms_per_call":
                per_call_ms(t.count_cpu.client, t.count_cpu.client_known, reps),
            "list_page_size": opts.page_size,
            "list_pages": t.pages,
            "list_members": t.members.first().copied().unwrap_or_default(),
            "list_members_match_count": members_match,
            "list_ids_ascending": t.ascending,
            "list_ms": t.list_ms.to_json(),
            "list_server_cpu_ms_per_call":
                per_call_ms(t.list_cpu.server, t.list_cpu.server_known, reps),
            "list_client_cpu_ms_per_call":
                per_call_ms(t.list_cpu.client, t.list_cpu.client_known, reps),
            "preview_ms": ms(wall.as_secs_f64() * 1e3),
            "preview_count": previewed.count,
            "preview_population": previewed.population,
            "preview_server_cpu_ms": per_call_ms(preview_cpu.server, preview_cpu.server_known, 1),
            "preview_client_cpu_ms": per_call_ms(preview_cpu.client, preview_cpu.client_known, 1),
            "preview_sample": previewed.sample_customer_ids.iter().take(3).collect::<Vec<_>>(),
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        let mut s = Series::default();
        assert_eq!(s.median(), None);
        for x in [3, 1, 2] {
            s.push(Duration::from_millis(x));
        }
        assert_eq!(s.median(), Some(2.0));
        s.push(Duration::from_millis(10));
        assert_eq!(s.median(), Some(2.5));
        assert_eq!(s.to_json()["min"], json!(1.0));
        assert_eq!(s.to_json()["max"], json!(10.0));
    }

    #[test]
    fn cpu_from_proc_stat() {
        // A command name with spaces and brackets; utime 250, stime 50 ticks.
        let stat = "1234 (patron (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0";
        assert_eq!(parse_cpu_seconds(stat, 100), Some(3.0));
        assert_eq!(parse_cpu_seconds("garbage", 100), None);
        // Our own process has a readable stat.
        assert!(process_cpu_seconds(std::process::id(), 100).is_some());
    }

    #[test]
    fn segments_are_named_before_use() {
        for (i, s) in SEGMENTS.iter().enumerate() {
            if let Some(rest) = s.rule.split("in_segment(\"").nth(1) {
                let named = rest.split('"').next().unwrap_or_default();
                assert!(
                    SEGMENTS[..i].iter().any(|p| p.id == named),
                    "{} names {named} before it exists",
                    s.id
                );
            }
        }
        assert!(SEGMENTS.iter().any(|s| s.rule == "true"));
    }
}
