//! The SVG chart, written by hand: one panel per workload with a
//! horizontal bar per server. Echo panels show server CPU µs per request
//! (user dark, system light, a whisker over the min–max of the total);
//! the idle panel shows bytes per connection.

use std::fmt::Write as _;

use crate::orchestrate::Workload;
use crate::peers::Peer;
use crate::report::{Metric, Report};

const PANEL_W: f64 = 540.0;
const LABEL_W: f64 = 140.0;
const BAR_W: f64 = 240.0;
const ROW_H: f64 = 26.0;
const TOP: f64 = 56.0;

pub fn svg(r: &Report) -> String {
    let rows = r.peers.len() as f64;
    let panel_h = 40.0 + rows * ROW_H + 16.0;
    let cols = 2;
    let n = r.workloads.len();
    let grid_rows = n.div_ceil(cols);
    let width = PANEL_W * cols as f64 + 20.0;
    let height = TOP + panel_h * grid_rows as f64 + 10.0;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        o,
        r##"<rect width="100%" height="100%" fill="#ffffff"/>
<text x="10" y="22" font-size="16" font-weight="bold">protoloop vs peers: server CPU per request (client panels: the client's), lower is better</text>
<rect x="10" y="34" width="12" height="12" fill="{}"/><text x="26" y="44">user</text>
<rect x="66" y="34" width="12" height="12" fill="{}"/><text x="82" y="44">system</text>
<text x="140" y="44" fill="#555">protoloop in orange; whisker: min–max of the total over the repetitions; right: median req/s</text>"##,
        colors(Peer::Tokio).0,
        colors(Peer::Tokio).1
    );
    for (i, &w) in r.workloads.iter().enumerate() {
        let x0 = 10.0 + PANEL_W * (i % cols) as f64;
        let y0 = TOP + panel_h * (i / cols) as f64;
        panel(&mut o, r, w, x0, y0);
    }
    o.push_str("</svg>\n");
    o
}

fn colors(p: Peer) -> (&'static str, &'static str) {
    match p {
        Peer::Protoloop => ("#d9480f", "#ffa94d"),
        _ => ("#364fc7", "#91a7ff"),
    }
}

fn panel(o: &mut String, r: &Report, w: Workload, x0: f64, y0: f64) {
    let idle = w == Workload::Idle;
    let title = if idle {
        format!("{}: bytes per connection", w.label(r.idle_conns))
    } else if w.is_client() {
        format!("{}: client CPU µs/req", w.label(r.idle_conns))
    } else {
        format!("{}: CPU µs/request", w.label(r.idle_conns))
    };
    let _ = writeln!(
        o,
        r#"<text x="{x0}" y="{}" font-weight="bold">{}</text>"#,
        y0 + 20.0,
        esc(&title)
    );
    let main = if idle {
        Metric::BytesPerConn
    } else {
        Metric::CpuPerReq
    };
    let max = r
        .peers
        .iter()
        .filter_map(|&p| r.stat(w, p, main).map(|s| s.max))
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    if max <= 0.0 {
        let _ = writeln!(
            o,
            r##"<text x="{x0}" y="{}" fill="#555">no data</text>"##,
            y0 + 44.0
        );
        return;
    }
    let scale = BAR_W / max;
    // Peers that sat this workload out get no row.
    let shown = r.peers.iter().filter(|&&p| r.stat(w, p, main).is_some());
    for (k, &p) in shown.enumerate() {
        let y = y0 + 32.0 + k as f64 * ROW_H;
        let _ = writeln!(
            o,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            x0 + LABEL_W - 8.0,
            y + 14.0,
            esc(p.label())
        );
        let Some(total) = r.stat(w, p, main) else {
            let _ = writeln!(
                o,
                r##"<text x="{}" y="{}" fill="#555">not run</text>"##,
                x0 + LABEL_W,
                y + 14.0
            );
            continue;
        };
        let (dark, light) = colors(p);
        let bx = x0 + LABEL_W;
        if idle {
            let wd = total.median.max(0.0) * scale;
            rect(o, bx, y + 2.0, wd, dark);
        } else {
            // Split the median total in the median user/system proportion.
            let user = r.median(w, p, Metric::UserPerReq).unwrap_or(0.0);
            let sys = r.median(w, p, Metric::SysPerReq).unwrap_or(0.0);
            let frac = if user + sys > 0.0 {
                user / (user + sys)
            } else {
                0.0
            };
            let wd = total.median * scale;
            rect(o, bx, y + 2.0, wd * frac, dark);
            rect(o, bx + wd * frac, y + 2.0, wd * (1.0 - frac), light);
        }
        let (a, b) = (bx + total.min * scale, bx + total.max * scale);
        let _ = writeln!(
            o,
            r##"<path d="M{a:.1} {m:.1}H{b:.1}M{a:.1} {t:.1}V{u:.1}M{b:.1} {t:.1}V{u:.1}" stroke="#000" fill="none"/>"##,
            m = y + 11.0,
            t = y + 6.0,
            u = y + 16.0
        );
        let mut label = main.format(total.median);
        if idle {
            label.push_str(" B");
        } else {
            label.push_str(" µs");
            if let Some(rps) = r.median(w, p, Metric::Rps) {
                let _ = write!(label, "  ·  {:.1}k req/s", rps / 1000.0);
            }
        }
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{}">{}</text>"#,
            bx + BAR_W + 8.0,
            y + 14.0,
            esc(&label)
        );
    }
}

fn rect(o: &mut String, x: f64, y: f64, w: f64, fill: &str) {
    let _ = writeln!(
        o,
        r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="18" fill="{fill}"/>"#,
        w.max(0.0)
    );
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
