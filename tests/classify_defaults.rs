//! The shipped default watches (config/policywatch.toml) on hand-written multilingual fixtures, and
//! on the shared seed article when `../shared` is present.

mod common;

use policywatch::classify::{watches_from_toml, Classifier};
use policywatch::item::Item;

fn defaults() -> Classifier {
    common::shipped_classifier()
}

/// The watches that flag a story, its language told from its text as the daemon does.
fn watches_for(c: &Classifier, title: &str, body: &str) -> Vec<String> {
    c.classify(&common::story(title, body))
        .into_iter()
        .map(|v| v.watch_id)
        .collect()
}

#[test]
fn default_rules_compile_without_warnings() {
    let c = defaults();
    let w: Vec<String> = c.warnings().iter().map(|w| w.to_string()).collect();
    assert!(w.is_empty(), "{w:#?}");
}

#[test]
fn vietnamese_fixture_is_both_watches() {
    // Written for this test: a short Vietnamese news item about US curbs on AI chip sales to China.
    let c = defaults();
    let title = "Mỹ siết chặt hạn chế xuất khẩu chip trí tuệ nhân tạo sang Trung Quốc";
    let body = "Washington vừa công bố các biện pháp trừng phạt mới đối với ngành bán dẫn của \
                Trung Quốc. Các bộ xử lý đồ họa cao cấp dùng để huấn luyện mô hình trí tuệ nhân \
                tạo sẽ cần giấy phép trước khi được bán cho khách hàng Trung Quốc.";
    assert_eq!(
        watches_for(&c, title, body),
        vec!["export-controls", "ai-chips"]
    );
    // The same story typed without diacritics, as some feeds do.
    let title = "My siet chat han che xuat khau chip tri tue nhan tao sang Trung Quoc";
    assert_eq!(
        watches_for(&c, title, ""),
        vec!["export-controls", "ai-chips"]
    );
}

#[test]
fn multilingual_fixtures() {
    let c = defaults();
    let both = vec!["export-controls", "ai-chips"];
    let ec = vec!["export-controls"];
    let ai = vec!["ai-chips"];
    let none: Vec<&str> = vec![];
    let cases: Vec<(&str, &str, Vec<&str>)> = vec![
        (
            "US tightens curbs on Nvidia H100 sales to China",
            "",
            both.clone(),
        ),
        (
            "Dutch government restricts ASML lithography exports",
            "New export controls cover DUV tools.",
            ec.clone(),
        ),
        (
            "AMD launches the Instinct MI300X accelerator",
            "A rival for data-centre AI workloads.",
            ai.clone(),
        ),
        (
            "Commerce adds 12 Chinese firms to the Entity List",
            "",
            ec.clone(),
        ),
        (
            "China restricts exports of gallium and germanium",
            "",
            ec.clone(),
        ),
        (
            "Fish and chips prices soar",
            "Potato shortage hits chippies.",
            none.clone(),
        ),
        ("Poker night: how to stack your chips", "", none.clone()),
        (
            "BIS warns central banks on inflation",
            "The Bank for International Settlements said...",
            none.clone(),
        ),
        (
            "India extends rice export ban",
            "Grain prices rise.",
            none.clone(),
        ),
        (
            "Nvidia GeForce RTX 4070 review",
            "A fine gaming card.",
            none.clone(),
        ),
        ("美国将多家中国芯片企业列入实体清单", "", ec.clone()),
        ("美國將多家中國晶片企業列入實體清單", "", ec.clone()),
        ("英伟达发布新一代AI芯片", "", ai.clone()),
        ("輝達推出新款AI晶片", "", ai.clone()),
        ("美國擴大對中國晶片出口管制", "", ec.clone()),
        ("半導体の輸出規制を強化", "", ec.clone()),
        ("미국, 대중 반도체 수출 통제 강화", "", ec.clone()),
        (
            "USA zaostrzają kontrolę eksportu chipów AI do Chin",
            "Nowe sankcje uderzą w NVIDIĘ.",
            both.clone(),
        ),
        (
            "Neue Exportkontrollen für KI-Chips",
            "Die USA beschränken Nvidia-Verkäufe nach China.",
            both.clone(),
        ),
        (
            "Les États-Unis durcissent les contrôles à l'exportation",
            "Les puces d'IA de Nvidia visées en Chine.",
            both.clone(),
        ),
        (
            "Nederland breidt exportbeperkingen voor chipmachines uit",
            "",
            ec.clone(),
        ),
    ];
    for (t, b, want) in cases {
        let got = watches_for(&c, t, b);
        let mut it = Item {
            title: t.into(),
            summary: b.into(),
            ..Default::default()
        };
        policywatch::lang::fill(&mut it);
        assert_eq!(got, want, "{t:?}\n{}", c.explain(&it));
    }
}

#[test]
fn seed_article_is_both_watches_when_shared_is_present() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/seed/vi-china-ai-chips-sanctions.txt"
    );
    let Ok(text) = std::fs::read_to_string(path) else {
        eprintln!("skipping: {path} not present");
        return;
    };
    let c = defaults();
    let mut lines = text.lines();
    let mut it = Item {
        title: lines.next().unwrap_or("").to_string(),
        content: lines.collect::<Vec<_>>().join("\n"),
        ..Default::default()
    };
    policywatch::lang::fill(&mut it);
    assert_eq!(it.lang.as_deref(), Some("vi"));
    let ids: Vec<String> = c.classify(&it).into_iter().map(|v| v.watch_id).collect();
    assert_eq!(
        ids,
        vec!["export-controls", "ai-chips"],
        "{}",
        c.explain(&it)
    );
}

/// The example in README's "Writing rules" compiles and does what the text around it says.
#[test]
fn readme_rule_example_compiles_and_matches() {
    let readme = include_str!("../README.md");
    let section = &readme[readme.find("### Writing rules").expect("section")..];
    let start = section.find("```toml\n").expect("toml block") + "```toml\n".len();
    let block = &section[start..start + section[start..].find("```").expect("block end")];
    let watches = watches_from_toml(block).expect("README example is valid TOML");
    let sets = policywatch::sets::SetLibrary::with_config("README.md", block)
        .unwrap_or_else(|e| panic!("README example's sets: {}", e.join("\n")));
    let c = Classifier::compile_with(&watches, &sets).expect("README example compiles");
    assert_eq!(
        watches_for(
            &c,
            "China curbs gallium exports",
            "Beijing announced new rules."
        ),
        vec!["gallium".to_string()]
    );
    assert_eq!(
        watches_for(&c, "Lệnh trừng phạt mới", "Mỹ siết xuất khẩu chip."),
        vec!["gallium".to_string()]
    );
    // The set's unaccented `trung phat` folds in a Vietnamese story, as the text says.
    let vi = Item {
        title: "Lệnh trừng phạt mới".into(),
        summary: "Mỹ siết xuất khẩu chip.".into(),
        lang: Some("vi".into()),
        ..Default::default()
    };
    let v = c.classify(&vi);
    assert_eq!(v.len(), 1);
    assert!(v[0]
        .evidence
        .iter()
        .any(|e| e.set.as_deref() == Some("sanction_vi")));
    assert!(watches_for(&c, "Fish and chips with gallium", "a curb").is_empty());
}
