//! The HTML audit report renders in headless Chromium and the rendered page
//! shows each order's authorised and certified figures and both charts
//! (issue 6). Chromium comes from the OS packages (`scripts/install-deps.sh`
//! installs it); without it this test fails and says so — it never passes
//! silently.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use audit::synth::{seed_scenario, Plant};

/// How long Chromium may take to load and dump one static page.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(120);

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("TRUSTLINE_CHROMIUM") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "TRUSTLINE_CHROMIUM={} is not a file",
            p.display()
        );
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "chromium is not installed, so the HTML audit report cannot be checked: run scripts/install-deps.sh \
         (or `apt-get install -y chromium`), or point TRUSTLINE_CHROMIUM at a Chromium binary"
    );
}

/// Runs headless Chromium on `page` with `mode` (`--dump-dom` or
/// `--screenshot=…`); returns its standard output.
fn run_chromium(page: &Path, mode: &str, profile: &Path) -> Vec<u8> {
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,2400",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(mode)
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut out).map(|_| out)
    });
    let deadline = Instant::now() + CHROMIUM_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("wait chromium") {
            assert!(status.success(), "chromium {mode} failed: {status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium {mode} did not finish within {CHROMIUM_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader
        .join()
        .expect("reader")
        .expect("read chromium output")
}

/// The text of the first `<td>` with class `class` in the table row that
/// carries `data-order="order"`.
fn cell(dom: &str, order: &str, class: &str) -> String {
    let row_start = dom
        .find(&format!("data-order=\"{order}\""))
        .unwrap_or_else(|| panic!("no row for order {order} in the rendered page"));
    let row = &dom[row_start..];
    let row = &row[..row.find("</tr>").expect("row end")];
    let marker = format!("class=\"n {class}\">");
    let at = row
        .find(&marker)
        .unwrap_or_else(|| panic!("no {class} cell for {order}: {row}"))
        + marker.len();
    row[at..row[at..].find('<').expect("cell end") + at]
        .trim()
        .to_owned()
}

#[test]
fn the_html_report_renders_in_chromium_with_every_orders_figures() {
    let dir = tempfile::tempdir().expect("tmp");
    let plant = Plant {
        over_quota: true,
        duplicate_serial: true,
        unrecorded_in_field: true,
    };
    let s = seed_scenario(&dir.path().join("data"), &plant).expect("seed");
    let page = dir.path().join("report.html");
    let status = Command::new(env!("CARGO_BIN_EXE_trustline"))
        .args([
            "audit",
            "--no-progress",
            "--format",
            "html",
            "--in-flight-grace",
            "0",
        ])
        .arg("--data-dir")
        .arg(&s.data_dir)
        .arg("--field")
        .arg(&s.field_dir)
        .arg("--out")
        .arg(&page)
        .status()
        .expect("run trustline");
    assert_eq!(status.code(), Some(1), "the planted anomalies are findings");
    let html = std::fs::read_to_string(&page).expect("report");
    // Self-contained: no script, no external resource.
    assert!(
        !html.contains("<script"),
        "the report must not need scripts"
    );
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));

    let profile = tempfile::tempdir().expect("profile");
    let dom =
        String::from_utf8(run_chromium(&page, "--dump-dom", profile.path())).expect("utf-8 dom");
    assert!(
        dom.contains("Trustline custody ledger audit"),
        "not the report: {dom:.400}"
    );
    for (order, authorised, certified) in &s.orders {
        assert_eq!(
            cell(&dom, order, "authorised"),
            authorised.to_string(),
            "{order} authorised"
        );
        assert_eq!(
            cell(&dom, order, "certified"),
            certified.to_string(),
            "{order} certified"
        );
    }
    assert!(dom.contains("3 finding(s)"));
    // Both charts were drawn (SVG inline) and label the orders and kinds.
    for (id, label) in [("orders-chart", "PO-A"), ("refusals-chart", "counterfeit")] {
        let at = dom
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("no {id}"));
        let chart = &dom[at..];
        let chart = &chart[..chart
            .find("</svg>")
            .unwrap_or_else(|| panic!("{id} has no svg"))];
        assert!(chart.contains("<svg"), "{id} has no svg");
        assert!(chart.contains(label), "{id} does not show {label}");
    }

    // And it paints: a screenshot of a page this size is far from empty.
    let shot = dir.path().join("report.png");
    run_chromium(
        &page,
        &format!("--screenshot={}", shot.display()),
        profile.path(),
    );
    let png = std::fs::read(&shot).expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a png");
    assert!(
        png.len() > 20_000,
        "screenshot of {} bytes looks blank",
        png.len()
    );
}
