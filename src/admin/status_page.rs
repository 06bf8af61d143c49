//! `/status`: one self-contained HTML page (inline CSS, an inline script, inline
//! SVG charts; no external asset or CDN) that reloads itself every few seconds.
//! Each server row can drain, maintain or ready its server and set its weight
//! through the admin API: the token is asked once and kept in sessionStorage,
//! sent as the Bearer header; an error the API answers is shown on the page (and
//! stops the refresh, so it is read), never swallowed.

use std::fmt::Write;

use super::history::{Sample, SAMPLES};
use super::report::{BackendReport, DiscoveredReport, ServerReport, StatusReport};

/// Seconds between automatic refreshes of the page.
const REFRESH_SECONDS: u32 = 3;

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}\
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em}\
.meta{color:#555;margin-bottom:1em}.bad{color:#b00020;font-weight:600}.warn{color:#9a6700;font-weight:600}\
table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px #0002;margin-bottom:.6em}\
th,td{padding:.3em .7em;border-bottom:1px solid #e4e4e4;text-align:right;white-space:nowrap}\
th{background:#f0f0f0;font-weight:600}th.l{text-align:left}td:first-child,th:first-child{text-align:left}\
td.l{text-align:left}.up{background:#d9f2dd}.down{background:#f9d6d9}.ejected{background:#fcebc7}.backup{color:#666;font-style:italic}\
.pill{display:inline-block;padding:0 .5em;border-radius:.7em;font-weight:600}\
.pill.up{color:#14632a}.pill.down{color:#8a0014}.pill.ejected,.pill.drain,.pill.maint{color:#8a5a00}.drain,.maint{background:#eee}\
button{font:inherit;font-size:.85em;margin:0 .1em;padding:.05em .5em}input.w{width:3.5em;font:inherit;font-size:.85em}\
#admin-error:empty{display:none}#admin-error{background:#f9d6d9;padding:.4em .7em;margin:.5em 0}\
.charts{display:flex;flex-wrap:wrap}.charts svg{background:#fff;box-shadow:0 1px 2px #0002;margin:0 .6em .6em 0}.charts text{font-size:11px;fill:#555}";

/// The page's script: the admin actions and the refresh.
const SCRIPT: &str = r#"
let busy = false, failed = false;
const errorBox = () => document.getElementById('admin-error');
function show(message) { failed = true; errorBox().textContent = message; }
function token() {
  let t = sessionStorage.getItem('fulcrum-token');
  if (!t) { t = prompt('Admin token (the content of admin.token_file)'); if (t) sessionStorage.setItem('fulcrum-token', t.trim()); }
  return t;
}
async function act(backend, server, body) {
  const t = token();
  if (!t) { show('no admin token given'); return; }
  busy = true;
  try {
    const r = await fetch('/api/backends/' + encodeURIComponent(backend) + '/servers/' + encodeURIComponent(server),
      {method: 'POST', headers: {'Authorization': 'Bearer ' + t, 'Content-Type': 'application/json'}, body: JSON.stringify(body)});
    const answer = await r.json().catch(() => ({}));
    if (!r.ok) {
      if (r.status === 401) sessionStorage.removeItem('fulcrum-token');
      show(backend + '/' + server + ': ' + r.status + ' ' + (answer.error || r.statusText));
      busy = false;
      return;
    }
    location.reload();
  } catch (e) { show(String(e)); busy = false; }
}
document.addEventListener('click', (e) => {
  const button = e.target.closest('button[data-action]');
  if (!button) return;
  const row = button.closest('tr');
  const action = button.dataset.action;
  if (action === 'weight') act(row.dataset.backend, row.dataset.server, {weight: parseInt(row.querySelector('input.w').value, 10)});
  else act(row.dataset.backend, row.dataset.server, {state: action});
});
setInterval(() => { if (!busy && !failed && !document.querySelector('input:focus')) location.reload(); }, REFRESH_MS);
"#;

/// Renders the page; `history` gives a backend's last 15 minutes.
pub fn render(report: &StatusReport, history: &dyn Fn(&str) -> Vec<Sample>) -> String {
    let mut html = String::with_capacity(8 * 1024);
    let script = SCRIPT.replace("REFRESH_MS", &(REFRESH_SECONDS * 1000).to_string());
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <noscript><meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\"></noscript>\
         <title>Fulcrum status</title><style>{STYLE}</style><script>{script}</script></head><body>\
         <h1>Fulcrum {}</h1><div class=\"meta\">config generation {} &middot; reloads: {} applied, {} rejected",
        esc(report.version),
        report.generation,
        report.reloads.succeeded,
        report.reloads.failed,
    );
    if report.reloads.last_ok {
        html.push_str(" &middot; last reload OK");
    } else {
        html.push_str(" &middot; <span class=\"bad\">last reload rejected:</span><ul>");
        for error in &report.reloads.last_errors {
            let _ = write!(html, "<li>{}</li>", esc(error));
        }
        html.push_str("</ul>");
    }
    let connections = &report.connections;
    let _ = write!(html, " &middot; client connections: {} open of {} allowed", connections.open, connections.cap);
    if connections.per_worker.len() > 1 {
        let per_worker: Vec<String> = connections.per_worker.iter().map(ToString::to_string).collect();
        let _ = write!(html, " (per worker: {})", per_worker.join(" / "));
    }
    if report.draining {
        html.push_str(" &middot; <span class=\"bad\">DRAINING</span>");
    }
    let _ =
        write!(html, " &middot; refreshes every {REFRESH_SECONDS}s</div><div id=\"admin-error\" role=\"alert\"></div>");

    html.push_str(
        "<h2>Frontends</h2><table><tr><th>name</th><th>mode</th><th>bind</th><th>active conns</th>\
         <th>total conns</th><th>rejected</th><th>requests</th><th>req/s</th><th>2xx</th><th>4xx</th><th>5xx</th>\
         <th>bytes in</th><th>bytes out</th></tr>",
    );
    for f in &report.frontends {
        let cap = f.max_connections.map_or(String::new(), |m| format!(" / {m}"));
        let _ = write!(
            html,
            "<tr><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&f.name),
            f.mode,
            esc(&f.binds.join(", ")),
            f.active_connections,
            cap,
            f.connections_total,
            f.rejected_connections,
            f.http_requests,
            f.request_rate,
            f.responses[1],
            f.responses[3],
            f.responses[4],
            bytes(f.received_bytes),
            bytes(f.sent_bytes),
        );
    }
    html.push_str("</table>");
    certificates(&mut html, report);

    for b in &report.backends {
        backend(&mut html, b, &history(&b.name));
    }
    html.push_str("</body></html>");
    html
}

/// Days left under which a certificate's expiry shows in red.
const EXPIRY_WARNING_DAYS: i64 = 14;

/// The certificates of the TLS frontends: names, expiry, days left.
fn certificates(html: &mut String, report: &StatusReport) {
    let tls: Vec<_> = report.frontends.iter().filter_map(|f| Some((f, f.certificates.as_ref()?))).collect();
    if tls.is_empty() {
        return;
    }
    let now = std::time::SystemTime::now();
    let now_secs = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    html.push_str(
        "<h2>Certificates</h2><table><tr><th>frontend</th><th>names</th><th>expires</th><th>days left</th></tr>",
    );
    for (f, certs) in tls {
        for cert in certs {
            let expires = u64::try_from(cert.not_after)
                .ok()
                .map(|secs| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
                .map_or_else(String::new, |at| humantime::format_rfc3339_seconds(at).to_string());
            let days = (cert.not_after - now_secs).div_euclid(86_400);
            let class = if days < EXPIRY_WARNING_DAYS { " class=\"bad\"" } else { "" };
            let _ = write!(
                html,
                "<tr><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td><td{class}>{days}</td></tr>",
                esc(&f.name),
                esc(&cert.names.join(", ")),
                esc(&expires),
            );
        }
    }
    html.push_str("</table>");
}

fn backend(html: &mut String, b: &BackendReport, history: &[Sample]) {
    let total = b.servers.len();
    let class = if b.up_servers == 0 && total > 0 { " class=\"bad\"" } else { "" };
    let _ = write!(
        html,
        "<h2>Backend {} <small>({}, <span{class}>{} of {} up</span>, 2xx {} &middot; 4xx {} &middot; 5xx {}, \
         {} retries)</small></h2>\
         <table><tr><th>server</th><th>address</th><th>state</th><th>weight</th><th>active</th><th>conns</th>\
         <th>requests</th><th>connect errors</th><th>check failures</th><th class=\"l\">last check</th><th>in state for</th>\
         <th class=\"l\">admin</th></tr>",
        esc(&b.name),
        esc(&b.balance),
        b.up_servers,
        total,
        b.responses[1],
        b.responses[3],
        b.responses[4],
        b.retries,
    );
    let mut shown = vec![false; b.discovered.len()];
    for s in &b.servers {
        // A discovered entry's line goes above its first member.
        let entry =
            b.discovered.iter().position(|d| s.name.strip_prefix(d.name.as_str()).is_some_and(|r| r.starts_with('/')));
        if let Some(i) = entry.filter(|&i| !shown[i]) {
            shown[i] = true;
            discovered(html, &b.discovered[i]);
        }
        server(html, &b.name, s, b.health_checked);
    }
    // Entries that resolve to nothing now still show.
    for (entry, _) in b.discovered.iter().zip(shown).filter(|(_, shown)| !shown) {
        discovered(html, entry);
    }
    html.push_str("</table>");
    charts(html, history);
    if let Some(q) = &b.queue {
        let class = if q.length > 0 { " class=\"warn\"" } else { "" };
        let _ = write!(
            html,
            "<p class=\"queue\">Queue: <span{class}>{} waiting</span> (max {}, timeout {} ms) &middot; {} waits, \
             mean {:.1} ms &middot; {} refused (503)</p>",
            q.length, q.max, q.timeout_ms, q.waits, q.mean_wait_ms, q.refused,
        );
    }
    if let Some(c) = &b.cache {
        let _ = write!(
            html,
            "<p class=\"queue\">Cache: {} of {} in {} entries &middot; {} hits, {} revalidated, {} misses, {} bypassed</p>",
            bytes(c.bytes),
            bytes(c.size),
            c.entries,
            c.hits,
            c.stale,
            c.misses,
            c.bypassed,
        );
    }
}

/// The row above a `discover` entry's members: what it looks up, what it found.
fn discovered(html: &mut String, d: &DiscoveredReport) {
    let class = if d.servers == 0 { " class=\"down\"" } else { "" };
    let _ = write!(
        html,
        "<tr{class}><td colspan=\"12\" class=\"l\"><b>{}</b> &middot; {} ({}): {} server{} &middot; {} failed lookups</td></tr>",
        esc(&d.name),
        esc(&d.address),
        d.discover,
        d.servers,
        if d.servers == 1 { "" } else { "s" },
        d.errors,
    );
}

fn server(html: &mut String, backend: &str, s: &ServerReport, checked: bool) {
    let state = match (s.admin_state, s.up, s.ejected) {
        ("maint", _, _) => "maint",
        ("drain", _, _) => "drain",
        (_, false, _) => "down",
        (_, true, true) => "ejected",
        (_, true, false) => "up",
    };
    // A ramping server shows the share of its weight it gets now.
    let weight = match s.ramp {
        Some(ramp) => format!("{} <small>({:.0}% slow start)</small>", s.weight, ramp * 100.0),
        None => s.weight.to_string(),
    };
    let last_check = match (&s.last_check, checked) {
        (Some(c), _) => format!(
            "{} {} ({:.1} ms, {} ago)",
            if c.ok { "&#10003;" } else { "&#10007;" },
            esc(&c.detail),
            c.duration_ms,
            duration(c.seconds_ago)
        ),
        (None, true) => "pending".to_string(),
        (None, false) => "not checked".to_string(),
    };
    let admin = match s.admin_until_ms {
        Some(until) => {
            let left = until.saturating_sub(crate::upstream::unix_ms()) as f64 / 1000.0;
            format!("{} <small>({} left)</small>", s.admin_state, duration(left))
        }
        None => s.admin_state.to_string(),
    };
    let _ = write!(
        html,
        "<tr class=\"{state}\" data-backend=\"{}\" data-server=\"{}\"><td{}>{}{}</td><td class=\"l\">{}</td>\
         <td><span class=\"pill {state}\">{}</span></td>\
         <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td><td>{}</td>\
         <td class=\"l\">{admin} <button data-action=\"drain\">drain</button><button data-action=\"maint\">maint</button>\
         <button data-action=\"ready\">ready</button> <input class=\"w\" type=\"number\" min=\"0\" max=\"256\" value=\"{}\" \
         aria-label=\"weight\"><button data-action=\"weight\">set weight</button></td></tr>",
        esc(backend),
        esc(&s.name),
        if s.backup { " class=\"backup\"" } else { "" },
        esc(&s.name),
        if s.backup { " (backup)" } else { "" },
        esc(&s.address),
        state.to_uppercase(),
        weight,
        s.active_connections,
        s.connections_total,
        s.http_requests,
        s.connect_errors,
        s.check_failures,
        last_check,
        duration(s.seconds_since_change),
        s.weight,
    );
}

/// Width and height of a chart, in px.
const CHART: (f64, f64) = (450.0, 90.0);

/// The shortest span a chart shows, in samples (seconds).
const MIN_WINDOW: usize = 60;

/// A backend's last 15 minutes: requests/s with 5xx/s, and p50/p99 latency.
fn charts(html: &mut String, history: &[Sample]) {
    if history.is_empty() {
        return;
    }
    html.push_str("<div class=\"charts\">");
    chart(html, "requests/s", "5xx/s", history, |s| (s.rps, s.errors), "");
    chart(html, "p50 ms", "p99 ms", history, |s| (s.p50_ms, s.p99_ms), " ms");
    html.push_str("</div>");
}

/// One chart of two series over the last `SAMPLES` seconds, scaled to the top one.
fn chart(
    html: &mut String,
    first: &str,
    second: &str,
    history: &[Sample],
    pick: fn(&Sample) -> (f32, f32),
    unit: &str,
) {
    let (width, height) = CHART;
    let top = history
        .iter()
        .map(|s| {
            let (a, b) = pick(s);
            a.max(b)
        })
        .fold(0.0f32, f32::max)
        .max(1e-3);
    // The window is what has been sampled (at least a minute), up to 15 minutes:
    // a process that just started does not draw a sliver at the right edge.
    let window = history.len().clamp(MIN_WINDOW, SAMPLES);
    let x = |index: usize| (window - history.len() + index) as f64 * width / window.saturating_sub(1).max(1) as f64;
    let span = if window >= SAMPLES { "last 15 min".to_string() } else { format!("last {window} s") };
    let y = |value: f32| height - 14.0 - f64::from(value / top) * (height - 20.0);
    let line = |which: usize| -> String {
        let mut points = String::with_capacity(history.len() * 12);
        for (index, sample) in history.iter().enumerate() {
            let (a, b) = pick(sample);
            let _ = write!(points, "{:.1},{:.1} ", x(index), y(if which == 0 { a } else { b }));
        }
        points
    };
    let _ = write!(
        html,
        "<svg width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"{first} and {second}, last 15 minutes\">\
         <polyline fill=\"none\" stroke=\"#2a6fdb\" stroke-width=\"1.5\" points=\"{}\"/>\
         <polyline fill=\"none\" stroke=\"#c0392b\" stroke-width=\"1.5\" points=\"{}\"/>\
         <text x=\"4\" y=\"12\">max {top:.1}{unit}</text>\
         <text x=\"4\" y=\"{}\"><tspan fill=\"#2a6fdb\">{first}</tspan> <tspan fill=\"#c0392b\">{second}</tspan> \
         ({span})</text></svg>",
        line(0),
        line(1),
        height - 2.0,
    );
}

/// Escapes text for HTML element content and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..=59 => format!("{seconds:.0}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(esc("<b a=\"x\">&'"), "&lt;b a=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn human_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(duration(75.0), "1m15s");
        assert_eq!(duration(7300.0), "2h01m");
    }
}
