//! Set parsing, joining, overriding, and every error with its position and hint.

use super::*;

/// The library of `shipped` files plus an optional user config; errors joined.
fn lib(shipped: &[(&str, &str)], user: Option<&str>) -> Result<SetLibrary, String> {
    SetLibrary::from_files(shipped, user.map(|u| ("user.toml", u))).map_err(|e| e.join("\n"))
}

fn err(shipped: &[(&str, &str)], user: Option<&str>) -> String {
    match lib(shipped, user) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

fn written(l: &SetLibrary, set: &str) -> Vec<String> {
    let mut v: Vec<String> = l
        .terms(set)
        .unwrap_or_else(|| panic!("no set {set}"))
        .iter()
        .map(|r| {
            let lang = r.term.lang.map_or("any".to_string(), |x| x.to_string());
            format!("{}:{lang}:{}", r.set, r.term.written)
        })
        .collect();
    v.sort();
    v
}

const CONCEPTS: &str = r#"
[sets.export_control]
label = "Export controls"
weight = 2.5
include = ["entity_list"]
any = ["caps(BIS)"]

[sets.entity_list]
label = "Entity List"
weight = 3
"#;
const EN: &str = r#"
[sets.export_control]
en = ["export control*", "export ban"]

[sets.entity_list]
en = ["entity list"]
"#;
const VI: &str = r#"
[sets.export_control]
vi = ["kiểm soát xuất khẩu", "cam xuat khau"]
"#;

fn shipped() -> Vec<(&'static str, &'static str)> {
    vec![
        ("concepts.toml", CONCEPTS),
        ("en.toml", EN),
        ("vi.toml", VI),
    ]
}

#[test]
fn shipped_files_join_and_includes_flatten() {
    let l = lib(&shipped(), None).unwrap();
    assert_eq!(
        written(&l, "export_control"),
        vec![
            "entity_list:en:entity list",
            "export_control:any:caps(BIS)",
            "export_control:en:export ban",
            "export_control:en:export control*",
            "export_control:vi:cam xuat khau",
            "export_control:vi:kiểm soát xuất khẩu",
        ]
    );
    let r = &l.terms("export_control").unwrap()[0];
    assert_eq!((&*r.concept, r.weight), ("Export controls", 2.5));
    let el = l
        .terms("export_control")
        .unwrap()
        .iter()
        .find(|r| &*r.set == "entity_list")
        .unwrap();
    // An included term keeps its own set's label and weight.
    assert_eq!((&*el.concept, el.weight), ("Entity List", 3.0));
    let t = &l.terms("export_control").unwrap()[0].term;
    assert!(t.caps && t.text == "BIS");
    let p = l
        .terms("export_control")
        .unwrap()
        .iter()
        .find(|r| r.term.prefix)
        .unwrap();
    assert_eq!(p.term.text, "export control");
}

#[test]
fn a_user_set_replaces_or_extends_the_shipped_one() {
    let replaced = lib(
        &shipped(),
        Some("[sets.entity_list]\nany = [\"unverified list\"]\n"),
    )
    .unwrap();
    assert_eq!(
        written(&replaced, "entity_list"),
        vec!["entity_list:any:unverified list"]
    );
    // Replaced: the shipped label is gone too (the label defaults to the name).
    assert_eq!(
        &*replaced.terms("entity_list").unwrap()[0].concept,
        "entity_list"
    );
    let extended = lib(
        &shipped(),
        Some("[sets.entity_list]\nextend = true\nxh = [\"uluhlu\"]\nlabel = \"The List\"\n"),
    )
    .unwrap();
    assert_eq!(
        written(&extended, "entity_list"),
        vec!["entity_list:en:entity list", "entity_list:xh:uluhlu"]
    );
    assert_eq!(
        &*extended.terms("entity_list").unwrap()[0].concept,
        "The List"
    );
    // The including set sees the extension.
    assert!(written(&extended, "export_control").contains(&"entity_list:xh:uluhlu".to_string()));
}

#[test]
fn unused_user_sets_warn_and_shipped_ones_do_not() {
    let user =
        "[sets.mine]\nen = [\"gallium\"]\n\n[sets.other]\nen = [\"x-ray\"]\ninclude = [\"mine\"]\n";
    let l = lib(&shipped(), Some(user)).unwrap();
    let w = l.unused_warnings(["export_control"]);
    assert_eq!(w.len(), 2, "{w:#?}");
    assert!(
        w[0].starts_with("user.toml:1:7: warning: set `mine` is not used"),
        "{}",
        w[0]
    );
    // Used through an include of a used set: no warning for it.
    let w = l.unused_warnings(["other"]);
    assert!(w.is_empty(), "{w:#?}");
}

#[test]
fn every_set_error_has_a_position_and_a_hint() {
    // (user config, expected "file:line:col: error: message" start, a piece of the hint)
    let cases: &[(&str, &str, &str)] = &[
        (
            "[sets.a]\nen = [\"ban OR curb\"]\n",
            "user.toml:2:8: error: set `a`: operator `OR` inside a term",
            "one term per string",
        ),
        (
            "[sets.a]\nen = [\"(ban)\"]\n",
            "user.toml:2:8: error: set `a`: `(` cannot stand inside a term",
            "one term per string",
        ),
        (
            "[sets.a]\nen = [\"ban^2\"]\n",
            "user.toml:2:8: error: set `a`: a term weight inside a set",
            "weight = 2",
        ),
        (
            "[sets.a]\nen = [\"ex*\"]\n",
            "user.toml:2:8: error: set `a`: wildcard too short",
            "at least 3 letters",
        ),
        (
            "[sets.a]\nen = [\"ok\", \"!!\"]\n",
            "user.toml:2:14: error: set `a`: term `!!` has no letters",
            "remove it",
        ),
        (
            "[sets.a]\nvn = [\"cấm\"]\n",
            "user.toml:2:1: error: set `a`: unknown language or key `vn`",
            "did you mean `vi`?",
        ),
        (
            "[sets.a]\nen = \"ban\"\n",
            "user.toml:2:6: error: set `a`: `en` must be an array of terms",
            "en = [",
        ),
        (
            "[sets.a]\nweight = -1\nen = [\"ban\"]\n",
            "user.toml:2:10: error: set `a`: weight must be a number",
            "weight = 2.5",
        ),
        (
            "[sets.a]\ninclude = [\"entity_lst\"]\nen = [\"ban\"]\n",
            "user.toml:2:12: error: set `a` includes unknown set `entity_lst`",
            "did you mean `entity_list`?",
        ),
        (
            "[sets.a]\ninclude = [\"b\"]\nen = [\"x1\"]\n[sets.b]\ninclude = [\"a\"]\nen = [\"x2\"]\n",
            "user.toml:5:12: error: include cycle: a → b → a",
            "remove one of these includes",
        ),
        (
            "[sets.a]\nlabel = \"A\"\n",
            "user.toml:1:7: error: set `a` has no terms",
            "give it terms",
        ),
        (
            "[sets.a]\ninclude = [\"b\"]\n[sets.b]\nlabel = \"B\"\n",
            "user.toml:1:7: error: set `a` has no terms",
            "its includes hold no terms",
        ),
        (
            "[sets.nope]\nextend = true\nen = [\"x1\"]\n",
            "user.toml:1:7: error: set `nope` has extend = true, but there is no shipped set",
            "remove `extend = true`",
        ),
        (
            "[sets.entity_lis]\nextend = true\nen = [\"x1\"]\n",
            "user.toml:1:7: error: set `entity_lis` has extend = true",
            "did you mean `entity_list`?",
        ),
        (
            "[sets.\"bad name\"]\nen = [\"x1\"]\n",
            "user.toml:1:7: error: set name `bad name` must be letters",
            "[sets.export_control]",
        ),
    ];
    for (user, start, hint) in cases {
        let e = err(&shipped(), Some(user));
        assert!(e.starts_with(start), "for {user:?}:\n{e}");
        assert!(e.contains(hint), "for {user:?}, no hint {hint:?}:\n{e}");
    }
}

#[test]
fn conflicts_between_shipped_files_are_refused() {
    let de = "[sets.entity_list]\nlabel = \"Entitätenliste\"\nde = [\"Entitätenliste\"]\n";
    let e = err(&[("concepts.toml", CONCEPTS), ("de.toml", de)], None);
    assert!(
        e.starts_with(
            "de.toml:2:1: error: set `entity_list`: `label` is given in two shipped files"
        ),
        "{e}"
    );
    assert!(e.contains("concepts.toml:"), "{e}");
    let e = err(
        &[("de.toml", "[sets.x]\nextend = true\nde = [\"a1\"]\n")],
        None,
    );
    assert!(e.contains("`extend` belongs in a user config"), "{e}");
}

#[test]
fn the_shipped_library_compiles_and_lists_every_file() {
    if let Err(e) = SetLibrary::shipped() {
        panic!("config/sets/*.toml do not compile:\n{}", e.join("\n"));
    }
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config/sets");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .expect("config/sets")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .map(|n| format!("config/sets/{n}"))
        .collect();
    on_disk.sort();
    let mut embedded: Vec<String> = SHIPPED.iter().map(|(n, _)| n.to_string()).collect();
    embedded.sort();
    assert_eq!(
        on_disk, embedded,
        "add new files of config/sets to sets::SHIPPED"
    );
    for (name, text) in SHIPPED {
        let on_disk = std::fs::read_to_string(format!("{}/{name}", env!("CARGO_MANIFEST_DIR")));
        assert_eq!(on_disk.ok().as_deref(), Some(*text), "{name}");
    }
}

#[test]
fn closest_names() {
    let l = lib(&shipped(), None).unwrap();
    assert_eq!(l.closest("export_contrl"), vec!["export_control"]);
    assert!(l.closest("zzz").is_empty());
}
