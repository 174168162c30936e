//! The renderers: HTML escaping, the chart, the JSON shape.

use super::*;

#[test]
fn html_escapes_everything_from_data() {
    let mut s = good();
    let evil = "<script>alert(1)</script>\"'&";
    s.keys.push(key(evil, 1, "active", 3));
    s.tls.suites.push("<img src=x onerror=alert(1)>".into());
    s.events.last_scan.as_mut().unwrap().tables = vec!["<b>t</b>".into()];
    let r = evaluate(&s);
    let page = html::render(&r);
    assert!(!page.contains("<script"), "unescaped script");
    assert!(!page.contains("<img"), "unescaped img");
    assert!(!page.contains("<b>t</b>"));
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;:v1"));
    // Self-contained: no external resource, no script at all.
    for banned in ["http://", "https://", "<script", "<link", "src=\""] {
        let outside_svg_ns = page.replace("http://www.w3.org/2000/svg", "");
        assert!(!outside_svg_ns.contains(banned), "{banned}");
    }
    assert!(page.contains("<svg"));
    let md = markdown::render(&r);
    assert!(!md.contains("<script"));
    assert!(md.contains("&lt;script&gt;"));
    assert_eq!(markdown::escape("a|b\nc"), "a\\|b c");
}

#[test]
fn chart_has_one_bar_per_active_key_and_caps() {
    let mut s = good();
    let (svg, left) = chart::svg(&evaluate(&s));
    assert_eq!(svg.matches("<rect").count(), 2);
    assert_eq!(left, 0);
    for i in 0..50 {
        s.keys.push(key(&format!("p{i}"), 1, "active", i));
    }
    let (svg, left) = chart::svg(&evaluate(&s));
    assert_eq!(svg.matches("<rect").count(), chart::MAX_BARS);
    assert_eq!(left, 52 - chart::MAX_BARS);
    s.keys.clear();
    assert!(chart::svg(&evaluate(&s)).0.is_empty());
}

#[test]
fn json_keeps_the_old_top_level_shape() {
    let v = serde_json::to_value(evaluate(&good())).unwrap();
    for k in [
        "generatedAt",
        "overall",
        "summary",
        "standards",
        "implementation",
        "inventory",
        "legacyMapping",
    ] {
        assert!(v.get(k).is_some(), "{k}");
    }
    for k in ["pciDss", "gdpr", "nist", "iso27001"] {
        assert!(v["standards"][k].is_array(), "{k}");
    }
    let c = &v["standards"]["pciDss"][0];
    assert_eq!(c["id"], "3.3.1");
    assert_eq!(c["status"], "pass");
    assert!(c["evidence"].is_array());
    let mut s = good();
    s.kek.mode = Some(0o100640);
    let v = serde_json::to_value(evaluate(&s)).unwrap();
    let c = v["standards"]["pciDss"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "3.6.1")
        .unwrap();
    assert_eq!(c["status"], "fail");
    assert!(c["remediation"].as_str().unwrap().contains("chmod 600"));
    assert_eq!(c["measurements"]["kekFileMode"], "640");
    assert_eq!(v["overall"], "fail");
}
