//! Property tests: the query parser, the normaliser and the matcher never panic on any input,
//! normalisation is idempotent, and evidence ranges always point into the original text.

use policywatch::classify::{Classifier, WatchConfig};
use policywatch::item::{Field, Item};
use policywatch::text::normalize;
use proptest::prelude::*;

/// Strings biased towards the interesting parts of the language and of multilingual text.
fn messy() -> impl Strategy<Value = String> {
    let atoms = prop::sample::select(vec![
        "chip",
        "Chips",
        "AND",
        "OR",
        "NOT",
        "-",
        "(",
        ")",
        "\"",
        "*",
        "^2",
        "^",
        "NEAR/3",
        "NEAR",
        "ONEAR/1",
        "atleast2(",
        "caps(",
        "title:",
        "link:",
        "bogus:",
        " ",
        "  ",
        "\t",
        "\n",
        "xuất",
        "khẩu",
        "Đ",
        "e\u{301}",
        "\u{301}",
        "芯片",
        "實體",
        "ＡＩ",
        "ﬁ",
        "İ",
        "ß",
        "\u{ad}",
        "\u{200b}",
        "-",
        "--",
        "’",
        "a-b",
        "H100",
        "🙂",
        "\u{0}",
        "ǅ",
        "ﾊﾟ",
        "ｶﾞ",
        "가",
        "\u{1100}\u{1161}",
    ]);
    prop::collection::vec(
        prop_oneof![atoms.prop_map(String::from), any::<String>()],
        0..12,
    )
    .prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn normalisation_is_idempotent(s in messy()) {
        let once = normalize(&s);
        let twice = normalize(&once.exact.text);
        prop_assert_eq!(&twice.exact.text, &once.exact.text);
        let f = once.folded().text.clone();
        let f2 = normalize(&f);
        prop_assert_eq!(&f2.folded().text, &f);
        // Every normalised byte range maps back to a range on char boundaries of the original.
        let n = &once.exact;
        for (i, _) in n.text.char_indices() {
            let (a, b) = n.to_original(i, n.text.len());
            prop_assert!(a <= b && b <= s.len());
            prop_assert!(s.is_char_boundary(a) && s.is_char_boundary(b));
        }
    }

    #[test]
    fn compile_never_panics(q in messy(), ex in messy()) {
        let mut w = WatchConfig::new("w", &q);
        w.exclude = Some(toml::Spanned::new(0..0, ex));
        let _ = Classifier::compile(&[w]);
    }

    #[test]
    fn classify_never_panics_and_evidence_is_in_bounds(q in messy(), title in messy(), body in messy()) {
        let Ok(c) = Classifier::compile(&[WatchConfig::new("w", &q)]) else { return Ok(()) };
        let it = Item {
            title: title.clone(),
            summary: body.clone(),
            content: format!("{body} {title}"),
            authors: vec![title.clone(), body.clone()],
            categories: vec![body.clone()],
            feed_name: title.clone(),
            link: Some(body.clone()),
            ..Default::default()
        };
        for v in c.classify(&it) {
            for e in v.evidence {
                let text = match e.field {
                    Field::Title => it.title.clone(),
                    Field::Summary => it.summary.clone(),
                    Field::Content => it.content.clone(),
                    Field::Author => it.authors.join(", "),
                    Field::Category => it.categories.join(", "),
                    Field::Feed => it.feed_name.clone(),
                    Field::Link => it.link.clone().unwrap_or_default(),
                };
                prop_assert!(e.start <= e.end && e.end <= text.len());
                prop_assert!(text.is_char_boundary(e.start) && text.is_char_boundary(e.end));
            }
        }
        let _ = c.explain(&it);
    }

    #[test]
    fn a_term_always_finds_itself(word in "[a-zA-Z]{3,12}", pre in "[ .,;]{1,3}", post in "[ .,;]{0,3}") {
        let c = Classifier::compile(&[WatchConfig::new("w", &word)]).unwrap();
        let title = format!("x{pre}{word}{post}");
        let v = c.classify(&Item { title: title.clone(), ..Default::default() });
        prop_assert_eq!(v.len(), 1);
        let e = &v[0].evidence[0];
        prop_assert_eq!(&title[e.start..e.end], word.as_str());
    }
}
