//! Table-driven tests of the rule language through the public API, plus API behaviour.

use super::*;

fn item(title: &str, summary: &str) -> Item {
    Item {
        title: title.into(),
        summary: summary.into(),
        ..Default::default()
    }
}

/// One case: does `query` match an item whose title is `text`?
fn check(query: &str, text: &str, expected: bool) {
    let c = Classifier::compile(&[WatchConfig::new("w", query)])
        .unwrap_or_else(|e| panic!("query {query:?} failed to compile: {e:?}"));
    let got = !c.classify(&item(text, "")).is_empty();
    assert_eq!(
        got,
        expected,
        "query {query:?} on {text:?}: expected {expected}\n{}",
        c.explain(&item(text, ""))
    );
}

#[test]
fn language_table() {
    let cases: &[(&str, &str, bool)] = &[
        // words, case, whole-word
        ("export", "New EXPORT rules", true),
        ("export", "Exporters complain", false),
        ("export*", "Exporters complain", true),
        ("sanction*", "US sanctioned firms", true),
        ("chip", "chipmaker", false),
        ("\"entity list\"", "added to the Entity  List today", true),
        ("\"entity list\"", "entity, list", false),
        ("\"entity list\"", "entity-list", true),
        ("\"export control\"", "export-control rules", true),
        ("\"export contr*\"", "export controlling", true),
        // boolean
        ("nvidia AND china", "Nvidia in China", true),
        ("nvidia AND china", "Nvidia in Chile", false),
        ("nvidia china", "Nvidia in China", true),
        ("nvidia OR amd", "AMD launches", true),
        ("chips NOT poker", "poker chips", false),
        ("chips -poker", "AI chips", true),
        ("chips -(poker OR casino)", "casino chips", false),
        (
            "(a100 OR h100) AND (china OR export*)",
            "H100 exports",
            true,
        ),
        // proximity
        ("nvidia NEAR/2 ban", "ban on Nvidia", true),
        ("nvidia NEAR/2 ban", "Nvidia sales rose but the ban", false),
        ("nvidia ONEAR/3 ban", "ban on Nvidia", false),
        ("nvidia ONEAR/3 ban", "Nvidia faces a ban", true),
        (
            "\"entity list\" NEAR/0 additions",
            "Entity List additions",
            true,
        ),
        ("(h100 OR a100) NEAR/3 export*", "exports of the A100", true),
        // a step between a letter and a digit is a word boundary; a term's own digits are not
        ("gpu", "ソフトバンク、GPU1万基を導入", true),
        ("gpu", "采购10000GPU", true),
        ("gaudi", "Intel Gaudi3 ships", true),
        ("h20", "Nvidia H200 ships", false),
        ("h20", "Nvidia H20E ships", true),
        ("gpu", "GPUs ship", false),
        // NEAR stays within a sentence; an initial's full stop is not a sentence's end
        (
            "ai NEAR/4 chip*",
            "growth in AI and cloud. The chip war",
            false,
        ),
        (
            "ai NEAR/4 chip*",
            "growth in AI and cloud; the chip war",
            true,
        ),
        ("ai NEAR/4 chip*", "AI rules! Chips next", false),
        ("ai NEAR/4 chip*", "AI rules! chips next", true),
        ("ai NEAR/6 chip*", "AI push in the U.S. Chip curbs", true),
        ("ai NEAR/4 chip*", "AI v3.5 chips", true),
        ("ai NEAR/8 芯片", "美国限制AI。芯片出口", false),
        ("ai NEAR/8 芯片", "美国限制AI芯片出口", true),
        // counts
        ("atleast3(chip*)", "chips chips chipmaker", true),
        ("atleast3(chip*)", "chips chips", false),
        // case-exact
        ("caps(BIS)", "BIS adds firms", true),
        ("caps(BIS)", "bis morgen", false),
        ("caps(BIS)", "Bis morgen", false),
        ("caps(BIS)", "ＢＩＳ rule", true),
        // fields
        ("title:nvidia", "Nvidia", true),
        ("summary:nvidia", "Nvidia", false),
        ("title:(nvidia OR amd) chips", "AMD chips", true),
        // weights are accepted and do not change matching
        ("nvidia^3 OR amd", "nvidia", true),
        // Diacritics: a term written with them matches them exactly; one written without them
        // ignores them in an item of unknown language, as here (for items of a known language
        // see `folding_does_not_cross_languages`)
        ("\"trung phat\"", "Mỹ áp lệnh trừng phạt", true),
        ("\"trừng phạt\"", "Mỹ áp lệnh trừng phạt", true),
        ("cấm", "cam kết", false),
        ("cấm", "lệnh cấm xuất khẩu", true),
        ("cam", "lệnh cấm", true),
        ("\"dai loan\"", "Đài Loan", true),
        ("\"xuất khẩu\"", "XUẤT KHẨU chip", true),
        ("\"xuat khau\"", "xuat khau", true),
        // decomposed input
        ("\"trừng phạt\"", "tru\u{031B}\u{0300}ng pha\u{0323}t", true),
        // German, French, Polish
        ("exportkontroll*", "Neue Exportkontrollen für Chips", true),
        (
            "\"controles a l'exportation\"",
            "Contrôles à l'exportation renforcés",
            true,
        ),
        (
            "\"contrôles à l'exportation\"",
            "Contrôles à l'exportation renforcés",
            true,
        ),
        ("sankcje", "Nowe sankcje na chipy", true),
        ("zakaz", "zakażenie", false),
        // Chinese: substring, simplified/traditional
        ("出口管制", "美国加强对华出口管制措施", true),
        ("实体清单", "列入實體清單", true),
        ("芯片", "晶片", false),
        ("华为", "華為遭制裁", true),
        // Japanese, Korean (substring, particles attached)
        ("輸出規制", "半導体の輸出規制を強化", true),
        ("반도체", "반도체를 수출", true),
        ("수출통제", "미국의 수출 통제", false),
        // full-width Latin
        ("nvidia", "ＮＶＩＤＩＡ新品", true),
        // punctuation in terms
        ("\"u.s.\"", "the U.S. rule", true),
        ("link:federalregister.gov", "x", false),
    ];
    for (q, t, e) in cases {
        check(q, t, *e);
    }
    verdicts_do_not_depend_on_earlier_items(cases);
}

/// The scan reuses per-thread buffers from item to item: every item of `cases`, under every
/// query of `cases` at once, gets the same verdicts in a thread of its own as it gets after
/// all the others were classified, in either order.
fn verdicts_do_not_depend_on_earlier_items(cases: &[(&str, &str, bool)]) {
    let watches: Vec<WatchConfig> = cases
        .iter()
        .enumerate()
        .map(|(i, (q, _, _))| WatchConfig::new(&format!("w{i}"), q))
        .collect();
    let c = std::sync::Arc::new(Classifier::compile(&watches).expect("compiles"));
    let items: Vec<Item> = cases
        .iter()
        .map(|(_, t, _)| item(t, &format!("{t} — {t}")))
        .collect();
    let alone: Vec<String> = items
        .iter()
        .map(|it| {
            let (c, it) = (c.clone(), it.clone());
            std::thread::spawn(move || format!("{:?}", c.classify(&it)))
                .join()
                .expect("thread")
        })
        .collect();
    let forward: Vec<String> = items
        .iter()
        .map(|it| format!("{:?}", c.classify(it)))
        .collect();
    let mut backward: Vec<String> = items
        .iter()
        .rev()
        .map(|it| format!("{:?}", c.classify(it)))
        .collect();
    backward.reverse();
    assert!(alone.iter().any(|v| v != "[]"), "some item matches");
    assert_eq!(forward, alone);
    assert_eq!(backward, alone);
}

#[test]
fn link_author_category_feed_scopes() {
    let c = Classifier::compile(&[
        WatchConfig::new("l", "link:federalregister.gov"),
        WatchConfig::new("a", "author:smith"),
        WatchConfig::new("c", "category:\"export controls\""),
        WatchConfig::new("f", "feed:official"),
    ])
    .unwrap();
    let it = Item {
        link: Some("https://www.federalregister.gov/documents/x".into()),
        authors: vec!["Jane Smith".into()],
        categories: vec!["Trade".into(), "Export Controls".into()],
        feed_name: "Gov feed".into(),
        feed_tags: vec!["official".into()],
        ..Default::default()
    };
    let ids: Vec<String> = c.classify(&it).into_iter().map(|v| v.watch_id).collect();
    assert_eq!(ids, vec!["l", "a", "c", "f"]);
}

#[test]
fn evidence_points_into_original_text() {
    let c = Classifier::compile(&[WatchConfig::new("v", "\"trung phat\" OR chip*")]).unwrap();
    let title = "Mỹ áp  lệnh TRỪNG PHẠT chip";
    let v = c.classify(&item(title, ""));
    assert_eq!(v.len(), 1);
    let spans: Vec<&str> = v[0]
        .evidence
        .iter()
        .map(|e| &title[e.start..e.end])
        .collect();
    assert_eq!(spans, vec!["TRỪNG PHẠT", "chip"]);
    assert_eq!(&*v[0].evidence[0].term, "\"trung phat\"");
    assert_eq!(v[0].evidence[0].field, Field::Title);
}

#[test]
fn score_prefers_title_and_more_terms() {
    let c = Classifier::compile(&[WatchConfig::new("w", "nvidia OR h100 OR export*")]).unwrap();
    let s = |t: &str, s: &str| {
        c.classify(&item(t, s))
            .first()
            .map(|v| v.score)
            .unwrap_or(0.0)
    };
    assert!(s("Nvidia", "") > s("", "Nvidia"));
    assert!(s("", "Nvidia H100") > s("", "Nvidia"));
    assert!(s("", "Nvidia H100 exports") > s("", "Nvidia H100"));
}

#[test]
fn min_score_and_exclude() {
    let mut w = WatchConfig::new("w", "nvidia OR h100");
    w.min_score = Some(2.5);
    w.exclude = Some(toml::Spanned::new(0..0, "gaming OR review".into()));
    let c = Classifier::compile(&[w]).unwrap();
    assert!(c.classify(&item("", "Nvidia")).is_empty()); // 1.0 < 2.5
    assert_eq!(c.classify(&item("", "Nvidia H100 news")).len(), 0); // 1.0 + 1.0/4
    assert_eq!(c.classify(&item("Nvidia H100", "")).len(), 1); // 2.0 + 2.0/4
    assert!(c.classify(&item("Nvidia H100 review", "")).is_empty());
    let ex = c.explain(&item("Nvidia H100 review", ""));
    assert!(ex.contains("exclude matched too"), "{ex}");
    let ex = c.explain(&item("", "Nvidia"));
    assert!(ex.contains("below min_score 2.5"), "{ex}");
}

#[test]
fn explain_names_the_failing_clause() {
    let c =
        Classifier::compile(&[WatchConfig::new("ai-chips", "nvidia AND (h100 OR a100)")]).unwrap();
    let ex = c.explain(&item("Nvidia earnings", ""));
    assert!(ex.contains("watch `ai-chips`: no match"), "{ex}");
    assert!(
        ex.contains("yes nvidia  found: title 0..6 \"Nvidia\""),
        "{ex}"
    );
    assert!(
        ex.contains("no  any of (0 of 2 alternatives matched)"),
        "{ex}"
    );
    assert!(ex.contains("none of these terms found: h100, a100"), "{ex}");
    let ex = c.explain(&item("H100 cluster", ""));
    assert!(
        ex.contains("no  nvidia  (not found in title/summary/content)"),
        "{ex}"
    );
    assert!(ex.contains("yes h100  found: title 0..4"), "{ex}");
}

#[test]
fn compile_reports_every_error_with_file_positions() {
    let src = r#"
[[watches]]
id = "ai-chips"
query = '''
chips AND (nvidia OR amd'''

[[watches]]
id = "export-controls"
query = "export* NEAR/x control*"

[[watches]]
id = "third"
query = "titel:chip"
exclude = "a AND"
"#;
    let ws = watches_from_toml(src).unwrap();
    let errs = Classifier::compile(&ws).err().expect("errors");
    assert_eq!(errs.len(), 4, "{errs:?}");
    let r = errs[0].render("watches.toml", src);
    assert!(
        r.starts_with(
            "watches.toml:5:11: error: watch `ai-chips`: unbalanced parenthesis opened here"
        ),
        "{r}"
    );
    assert!(
        r.contains("5 | chips AND (nvidia OR amd'''\n  |           ^"),
        "{r}"
    );
    let r = errs[1].render("watches.toml", src);
    assert!(
        r.starts_with(
            "watches.toml:9:18: error: watch `export-controls`: NEAR needs a number: NEAR/5"
        ),
        "{r}"
    );
    assert!(errs[2]
        .render("w.toml", src)
        .contains("unknown field scope `titel:`"));
    assert_eq!(errs[3].source, RuleSource::Exclude);
    assert!(errs[3].to_string().contains("`AND` needs a term after it"));
}

#[test]
fn other_compile_errors() {
    let bad = [
        ("NOT poker", "none of its terms"),
        ("chips OR NOT poker", "none of its terms"),
        ("\"...\"", "no letters or digits"),
    ];
    for (q, msg) in bad {
        let e = Classifier::compile(&[WatchConfig::new("w", q)])
            .err()
            .expect(q);
        assert!(e[0].message.contains(msg), "{q}: {:?}", e[0]);
    }
    let e = Classifier::compile(&[WatchConfig::new("w", "a1"), WatchConfig::new("w", "b1")])
        .err()
        .unwrap();
    assert!(e[0].message.contains("duplicate"));
}

#[test]
fn toml_ignores_other_keys_and_reads_options() {
    let src = r#"
[daemon]
poll = "5m"
[[watches]]
id = "x"
name = "X"
query = "nvidia"
alert = "immediate"
min_score = 1.5
tags = ["chips"]
weights = { title = 4.0 }
"#;
    let ws = watches_from_toml(src).unwrap();
    assert_eq!(ws[0].alert, AlertMode::Immediate);
    assert_eq!(ws[0].weights.title, 4.0);
    assert_eq!(ws[0].weights.summary, 1.0);
    let c = Classifier::compile(&ws).unwrap();
    assert_eq!(c.watch_ids(), vec!["x"]);
    assert_eq!(c.classify(&item("Nvidia", ""))[0].score, 4.0);
    assert!(watches_from_toml("[[watches]]\nid='a'\nquery='b'\nbogus=1\n").is_err());
}

#[test]
fn warnings_for_noisy_rules() {
    let c = Classifier::compile(&[
        WatchConfig::new("a", "chips OR nvidia"),
        WatchConfig::new("b", "BIS AND export*"),
        WatchConfig::new("c", "ai OR \"ai chip\""),
        WatchConfig::new("d", "chips AND (nvidia OR amd)"),
        WatchConfig::new("e", "xy OR export* or import*"),
    ])
    .unwrap();
    let ws: Vec<(String, String)> = c
        .warnings()
        .iter()
        .map(|w| (w.watch_id.clone(), w.message.clone()))
        .collect();
    assert!(
        ws.iter()
            .any(|(id, m)| id == "a" && m.contains("`chips` alone")),
        "{ws:?}"
    );
    assert!(
        ws.iter()
            .any(|(id, m)| id == "b" && m.contains("Bank for International")),
        "{ws:?}"
    );
    assert!(
        ws.iter()
            .any(|(id, m)| id == "c" && m.contains("`ai` alone")),
        "{ws:?}"
    );
    assert!(!ws.iter().any(|(id, _)| id == "d"), "{ws:?}");
    assert!(
        ws.iter()
            .any(|(id, m)| id == "e" && m.contains("`xy` is very short")),
        "{ws:?}"
    );
    assert!(
        ws.iter()
            .any(|(id, m)| id == "e" && m.contains("`or` is searched as a word")),
        "{ws:?}"
    );
    let r = c.warnings()[0].render("w.toml", "");
    assert!(r.contains("warning:"), "{r}");
}

/// A noisy set term is reported at the `@name` in each watch's own query, though the two
/// watches name the same set.
#[test]
fn noisy_set_terms_are_reported_where_each_watch_names_the_set() {
    let lib =
        SetLibrary::from_files(&[], Some(("s.toml", "[sets.chipw]\nen = [\"chips\"]\n"))).unwrap();
    let c = Classifier::compile_with(
        &[
            WatchConfig::new("a", "@chipw"),
            WatchConfig::new("b", "nvidia OR @chipw"),
        ],
        &lib,
    )
    .unwrap();
    let at: Vec<(&str, usize)> = c
        .warnings()
        .iter()
        .filter(|w| w.message.contains("`chips` alone"))
        .map(|w| (w.watch_id.as_str(), w.offset))
        .collect();
    assert_eq!(at, [("a", 0), ("b", 10)]);
}

/// Every atom's `term` is the rank of its display among the distinct displays in string
/// order, however many atoms share one (the shipped config: thousands of set terms, each named
/// many times).
#[test]
fn atoms_are_numbered_by_their_display_in_string_order() {
    let src = include_str!("../../config/policywatch.toml");
    let c = crate::config::load_str("policywatch.toml", src)
        .expect("the shipped config loads")
        .classifier;
    let mut displays: Vec<&str> = c.matcher.atoms.iter().map(|a| &*a.display).collect();
    displays.sort_unstable();
    displays.dedup();
    assert!(displays.len() > 1000, "{} displays", displays.len());
    for a in &c.matcher.atoms {
        assert_eq!(
            displays[a.term as usize], &*a.display,
            "atom {} numbered {}",
            a.display, a.term
        );
    }
}

#[test]
fn classifier_is_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<Classifier>();
}

#[test]
fn near_on_large_repetitive_text_is_bounded_and_correct() {
    // Many hits of both sides: only nearby pairs are examined, and hits beyond the per-field cap
    // are ignored, so this stays cheap; the match at the start is found.
    let content = format!("ban chip {}", "chip ban ".repeat(50_000));
    let c = Classifier::compile(&[WatchConfig::new("w", "chip NEAR/0 ban AND atleast3(chip)")])
        .unwrap();
    let it = Item {
        content,
        ..Default::default()
    };
    assert_eq!(c.classify(&it).len(), 1);
    let far = format!("chip {} ban", "x ".repeat(10_000));
    let it = Item {
        content: far,
        ..Default::default()
    };
    assert!(c.classify(&it).is_empty());
}

/// A classifier over `query`, with the sets of `sets_toml` (a user config's `[sets.*]`).
fn with_sets(sets_toml: &str, query: &str) -> Classifier {
    let lib = SetLibrary::from_files(&[], Some(("sets.toml", sets_toml)))
        .unwrap_or_else(|e| panic!("{}", e.join("\n")));
    Classifier::compile_with(&[WatchConfig::new("w", query)], &lib)
        .unwrap_or_else(|e| panic!("{query:?}: {e:?}"))
}

const SETS: &str = r#"
[sets.entity_list]
label = "Entity List"
weight = 3
en = ["entity list", "unverified list"]

[sets.tech]
label = "Technology"
en = ["chip*", "semiconductor*"]
any = ["caps(EUV)"]

[sets.restriction]
en = ["ban", "bans", "curb*"]
vi = ["cấm", "cam", "hạn chế", "han che"]

[sets.export_word]
en = ["export*"]
vi = ["xuat khau"]
"#;

#[test]
fn sets_expand_where_terms_stand_and_fill_evidence() {
    let c = with_sets(SETS, "title:@entity_list OR (@restriction NEAR/3 @tech)");
    let v = c.classify(&item("Firms added to the Entity List", ""));
    assert_eq!(v.len(), 1);
    let e = &v[0].evidence[0];
    assert_eq!(
        (&*e.term, e.set.as_deref(), e.concept.as_deref()),
        ("entity list", Some("entity_list"), Some("Entity List"))
    );
    // title: scopes every term of the set.
    assert!(c
        .classify(&item("Markets", "added to the Entity List"))
        .is_empty());
    assert_eq!(c.classify(&item("US curbs on chips", "")).len(), 1);
    // caps() inside a set holds: "euv" in lower case is not the acronym.
    let c = with_sets(SETS, "@tech AND ban");
    assert_eq!(c.classify(&item("EUV ban", "")).len(), 1);
    assert!(c.classify(&item("euv ban", "")).is_empty());
    // `classify --explain` names the set of a found term.
    let x = c.explain(&item("EUV ban", ""));
    assert!(x.contains("caps(EUV) [@tech]  found: title 0..3"), "{x}");
}

/// A set named again is lowered once per scope and `caps`: each naming keeps its own.
#[test]
fn a_set_named_twice_keeps_each_naming_s_scope_and_caps() {
    // The title-scoped naming must not borrow the unscoped one's atoms, nor the other way.
    let c = with_sets(SETS, "(title:@tech AND ban) OR (@tech AND curbs)");
    assert_eq!(c.classify(&item("Chip ban", "")).len(), 1);
    assert!(c.classify(&item("Ban", "on chips")).is_empty());
    assert_eq!(c.classify(&item("Curbs", "on chips")).len(), 1);
    // caps() compares with the case the terms are written in ("entity list").
    let c = with_sets(
        SETS,
        "(caps(@entity_list) AND chips) OR (@entity_list AND gallium)",
    );
    assert!(c.classify(&item("Entity List chips", "")).is_empty());
    assert_eq!(c.classify(&item("entity list chips", "")).len(), 1);
    assert_eq!(c.classify(&item("Entity List gallium", "")).len(), 1);
    // The same term listed in two languages of one set, and a set named under the same scope
    // twice, give one evidence entry per place found.
    let c = with_sets(SETS, "@restriction AND (@tech OR (@tech NEAR/3 cam))");
    let v = c.classify(&item("cam chips", ""));
    assert_eq!(v.len(), 1);
    let found: Vec<(&str, usize)> = v[0].evidence.iter().map(|e| (&*e.term, e.start)).collect();
    assert_eq!(found, [("cam", 0), ("chip*", 4)]);
}

/// A term several languages write alike is one line of an explanation, not one per language.
#[test]
fn explain_shows_a_term_listed_under_several_languages_once() {
    let sets = "[sets.chipw]\nen = [\"chip\"]\nde = [\"chip\"]\nfr = [\"chip\"]\n";
    let c = with_sets(sets, "@chipw AND (ban OR embargo OR curbs)");
    let x = c.explain(&item("Chip ban", "no embargo on the chip"));
    assert_eq!(x.matches("chip [@chipw]").count(), 1, "{x}");
    assert!(
        x.contains("3 of 3 alternatives matched, each term shown once"),
        "{x}"
    );
    // Distinct terms are all still there, and the header says nothing when none repeats.
    assert!(x.contains("2 of 3 alternatives matched):"), "{x}");
    assert_eq!(x.matches("found:").count(), 3, "{x}");
}

#[test]
fn unknown_set_is_refused_at_the_name_with_the_closest_names() {
    let lib = SetLibrary::from_files(&[], Some(("sets.toml", SETS))).unwrap();
    let src = "[[watches]]\nid = \"w\"\nquery = 'chips AND @restrictoin'\n";
    let ws = watches_from_toml(src).unwrap();
    let errs = match Classifier::compile_with(&ws, &lib) {
        Ok(_) => panic!("compiled"),
        Err(e) => e,
    };
    let r = errs[0].render("p.toml", src);
    assert!(
        r.starts_with(
            "p.toml:3:20: error: watch `w`: unknown set `@restrictoin`; did you mean `@restriction`?"
        ),
        "{r}"
    );
    assert!(r.contains("hint: "), "{r}");
    let e = perr_of(&lib, "lang:vn AND chips");
    assert!(
        e.contains("unknown language `vn`") && e.contains("lang:vi"),
        "{e}"
    );
}

fn perr_of(lib: &SetLibrary, q: &str) -> String {
    match Classifier::compile_with(&[WatchConfig::new("w", q)], lib) {
        Ok(_) => panic!("{q} compiled"),
        Err(e) => e
            .iter()
            .map(|x| format!("{x}"))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

fn in_lang(title: &str, lang: &str) -> Item {
    Item {
        title: title.into(),
        lang: Some(lang.into()),
        ..Default::default()
    }
}

#[test]
fn folding_does_not_cross_languages() {
    // English `ban` (a set's `en` term, or written in the query) never finds Vietnamese "bán"
    // ("sell") in a Vietnamese item; it still finds "ban" and "BAN".
    let sales = in_lang(
        "Doanh số bán chip của Nvidia tại Trung Quốc tăng mạnh",
        "vi",
    );
    for q in ["@restriction", "ban", "ban AND chip*"] {
        let c = with_sets(SETS, q);
        assert!(c.classify(&sales).is_empty(), "{q}: {}", c.explain(&sales));
        assert_eq!(
            c.classify(&in_lang("US BAN on chips", "en")).len(),
            1,
            "{q}"
        );
    }
    // A vi term without diacritics finds the accented Vietnamese in a Vietnamese item...
    let c = with_sets(SETS, "@restriction NEAR/2 @export_word");
    let vi = in_lang("Ấn Độ cấm xuất khẩu chip", "vi");
    let v = c.classify(&vi);
    assert_eq!(v.len(), 1, "{}", c.explain(&vi));
    let terms: Vec<&str> = v[0].evidence.iter().map(|e| &*e.term).collect();
    assert!(
        terms.contains(&"cam") && terms.contains(&"xuat khau"),
        "{terms:?}"
    );
    // ...and unaccented Vietnamese anywhere, but does not fold on a French item.
    assert_eq!(
        c.classify(&in_lang("An Do cam xuat khau chip", "fr")).len(),
        1
    );
    let c = with_sets(SETS, "@export_word AND han che");
    assert!(c.classify(&in_lang("Hạn chế à l'export", "fr")).is_empty());
    let c = with_sets(SETS, "@export_word");
    assert!(c.classify(&in_lang("Xuất khẩu", "fr")).is_empty());
    assert_eq!(c.classify(&in_lang("Xuất khẩu", "vi")).len(), 1);
    // A term written with diacritics matches them in any item.
    let c = with_sets(SETS, "\"hạn chế\"");
    assert_eq!(c.classify(&in_lang("Hạn chế", "fr")).len(), 1);
}

#[test]
fn a_prefix_s_star_may_stand_for_accented_letters_in_any_language() {
    // Only the letters a term spells are judged for diacritics, not what its `*` stands for:
    // a name written once in a query finds its Polish and Spanish inflections.
    let c = with_sets(SETS, "Nvidi* OR inversi*");
    for (text, lang) in [
        ("Sankcje zabolały Nvidię", "pl"),
        ("Rozmowy z Nvidią", "pl"),
        ("La inversión en China", "es"),
    ] {
        let it = in_lang(text, lang);
        assert_eq!(c.classify(&it).len(), 1, "{text}: {}", c.explain(&it));
    }
    // The accent inside the spelled letters still decides: `ban*` never finds "bán".
    let c = with_sets(SETS, "ban*");
    assert!(c.classify(&in_lang("Doanh số bán chip", "vi")).is_empty());
    assert!(c.classify(&in_lang("Doanh số bánh", "vi")).is_empty());
    assert_eq!(c.classify(&in_lang("Nvidia banned", "vi")).len(), 1);
}

#[test]
fn lang_scope_tests_the_item_language() {
    let c = with_sets(SETS, "lang:vi AND chip*");
    assert_eq!(c.classify(&in_lang("chip", "vi")).len(), 1);
    assert!(c.classify(&in_lang("chip", "en")).is_empty());
    assert!(c.classify(&item("chip", "")).is_empty());
    let c = with_sets(SETS, "chip* AND NOT lang:(vi OR zh)");
    assert_eq!(c.classify(&in_lang("chip", "en")).len(), 1);
    assert!(c.classify(&in_lang("chip", "zh")).is_empty());
    // Never evidence, never score.
    let c = with_sets(SETS, "chip* AND lang:en");
    let v = c.classify(&in_lang("chips", "en"));
    assert_eq!(v[0].evidence.len(), 1);
    assert_eq!(v[0].score, 2.0);
    let x = c.explain(&in_lang("chips", "de"));
    assert!(x.contains("no  lang:en  (the item's language: de)"), "{x}");
    assert!(x.starts_with("language: de\n"), "{x}");
    let lib = SetLibrary::from_files(&[], Some(("s.toml", SETS))).unwrap();
    assert!(perr_of(&lib, "lang:english AND chips").contains("did you mean lang:en?"));
    assert!(perr_of(&lib, "lang:(vi OR xx) AND chips").contains("unknown language `xx`"));
    assert!(perr_of(&lib, "lang:vi NEAR/3 chips").contains("NEAR works on"));
}

const RANK_SETS: &str = r#"
[sets.entity_list]
label = "Entity List"
weight = 3
en = ["entity list"]

[sets.g1]
en = ["chip*"]
[sets.g2]
en = ["china"]
[sets.g3]
en = ["export*"]
[sets.g4]
en = ["trade"]
[sets.g5]
en = ["semiconductor*"]
[sets.g6]
en = ["technology"]
[sets.g7]
en = ["market*"]
[sets.g8]
en = ["rules"]
[sets.g9]
en = ["firms"]
[sets.g10]
en = ["curb*", "ban", "limits"]
"#;

#[test]
fn an_instrument_outranks_any_number_of_generic_words() {
    let q = "@entity_list OR @g1 OR @g2 OR @g3 OR @g4 OR @g5 OR @g6 OR @g7 OR @g8 OR @g9 OR @g10";
    let c = with_sets(RANK_SETS, q);
    let score = |t: &str, s: &str| c.classify(&item(t, s))[0].score;
    let generic = "China chip export trade semiconductor technology market rules firms curbs";
    // Ten generic concepts, each in title and summary: 2.5 each, 3.33 together.
    let many = score(generic, generic);
    assert!(many < 3.4, "{many}");
    // One instrument in the title (6), or even in the summary alone (3), ranks higher.
    assert!(score("Three firms added to the Entity List", "") > many);
    assert!(score("Three added", "They join the Entity List.") > score(generic, ""));
    // More terms of one set are one concept: a second, third... generic set add little.
    assert_eq!(score("chips chipmakers chipsets", ""), 2.0);
    assert_eq!(score("chips from China", ""), 2.5);
    // Terms written in the query are concepts of weight 1 each, ranked the same way.
    let c = Classifier::compile(&[WatchConfig::new(
        "w",
        "\"entity list\"^3 OR china OR chip* OR export* OR trade OR rules OR firms",
    )])
    .unwrap();
    let s = |t: &str| c.classify(&item(t, ""))[0].score;
    assert!(s("Entity List") > s("China chip export trade rules firms"));
    assert_eq!(s("Entity List"), 6.0);
}
