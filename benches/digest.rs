//! Renders a digest of 10,000 matched stories (the "a noisy watch after a long outage" case)
//! and prints how long it takes and how big the parts are. Run with
//! `cargo bench --bench digest`.

use std::time::Instant;

use chrono::{Duration, TimeZone, Utc};
use policywatch::digest::{render, Digest, DigestKind, RenderLimits, Section, Story};
use policywatch::item::{Evidence, Field};

fn stories(watch: &str, n: usize, base: i64) -> Vec<Story> {
    let t0 = Utc
        .with_ymd_and_hms(2026, 11, 27, 0, 0, 0)
        .single()
        .expect("time");
    (0..n)
        .map(|i| {
            let summary = format!(
                "{} Officials said on day {i} that the {watch} rules tighten licensing for \
                 advanced semiconductors. Bộ Thương mại Hoa Kỳ bổ sung các công ty vào danh sách \
                 thực thể. 美国商务部将多家公司列入实体清单。 {}",
                "Background paragraph. ".repeat(i % 7),
                "More detail follows here. ".repeat(10)
            );
            let at = summary.find("licensing").unwrap_or(0);
            Story {
                item_id: base + i as i64,
                title: format!("{watch}: new export licensing rule number {i} <b>&</b>"),
                link: Some(format!("https://news.example/{watch}/{i}?utm=x&y=\"z\"")),
                feed_name: format!("Feed {}", i % 40),
                published: Some(t0 + Duration::minutes(i as i64)),
                summary,
                summary_field: Field::Summary,
                score: (i % 113) as f64 / 7.0,
                evidence: vec![
                    Evidence {
                        term: "licens*".into(),
                        set: None,
                        concept: None,
                        field: Field::Summary,
                        start: at,
                        end: at + 9,
                    },
                    Evidence {
                        term: "export".into(),
                        set: None,
                        concept: None,
                        field: Field::Title,
                        start: watch.len() + 6,
                        end: watch.len() + 12,
                    },
                ],
                also_reported: Vec::new(),
                lang: Some(if i % 3 == 0 { "vi" } else { "en" }.into()),
                ..Default::default()
            }
        })
        .collect()
}

fn main() {
    let d = Digest {
        id: "daily".into(),
        title: "policywatch daily digest".into(),
        generated_at: Utc
            .with_ymd_and_hms(2026, 11, 28, 6, 30, 0)
            .single()
            .expect("time"),
        timezone: "Europe/Berlin".parse().expect("tz"),
        sections: vec![
            Section {
                watch_id: "export-controls".into(),
                watch_name: "Export controls".into(),
                stories: stories("export-controls", 7_000, 0),
            },
            Section {
                watch_id: "ai-chips".into(),
                watch_name: "AI chips".into(),
                stories: stories("ai-chips", 3_000, 100_000),
            },
        ],
        feed_health: Vec::new(),
        kind: DigestKind::Digest,
        detail: Default::default(),
        contact: None,
        deferred: 0,
    };
    let limits = RenderLimits::default();
    let runs = 20;
    let mut best = std::time::Duration::MAX;
    let mut out = None;
    let t_all = Instant::now();
    for _ in 0..runs {
        let t = Instant::now();
        let r = render(&d, &limits);
        best = best.min(t.elapsed());
        out = Some(r);
    }
    let mean = t_all.elapsed() / runs;
    let r = out.expect("rendered");
    println!(
        "digest render: 10000 stories (max_stories {}, snippet {} chars): best {:.2} ms, mean {:.2} ms over {runs} runs",
        limits.max_stories,
        limits.snippet_chars,
        best.as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e3
    );
    println!(
        "  full {}, listed {}, left for the next digest {}, subject {:?}",
        r.shown, r.listed, r.trimmed, r.subject
    );
    println!(
        "  text {} bytes, html {} bytes, both {} bytes (budget {} bytes encoded)",
        r.text.len(),
        r.html.len(),
        r.text.len() + r.html.len(),
        limits.max_bytes
    );
    let t = Instant::now();
    let recs = policywatch::digest::log_lines(&d, &limits);
    println!(
        "digest log_lines: {} records in {:.2} ms",
        recs.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
}
