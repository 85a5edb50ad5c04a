//! HTTP/1.1 head parsing: httparse on the heads tincan sees most (a curl/wrk-sized request, a
//! browser request with cookies), and the load generator's own response parser, which walks a
//! head and finds the body's end. Run: `cargo bench --bench parse`.
//!
//! tincan's request session parses with httparse and owns framing and limits around it, so the
//! httparse figure is the floor of its per-request parsing cost.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;

use tincan::bench::http::ResponseParser;

const SMALL: &[u8] =
    b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n";

const BROWSER: &[u8] = b"GET /wp-content/uploads/2010/03/hello-kitty-darth-vader-pink.jpg HTTP/1.1\r\n\
Host: www.kittyhell.com\r\n\
User-Agent: Mozilla/5.0 (Macintosh; U; Intel Mac OS X 10.6; ja-JP-mac; rv:1.9.2.3) Gecko/20100401 Firefox/3.6.3 Pathtraq/0.9\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: ja,en-us;q=0.7,en;q=0.3\r\n\
Accept-Encoding: gzip,deflate\r\n\
Accept-Charset: Shift_JIS,utf-8;q=0.7,*;q=0.7\r\n\
Keep-Alive: 115\r\n\
Connection: keep-alive\r\n\
Cookie: wp_ozh_wsa_visits=2; wp_ozh_wsa_visit_lasttime=xxxxxxxxxx; __utma=xxxxxxxxx.xxxxxxxxxx.xxxxxxxxxx.xxxxxxxxxx.xxxxxxxxxx.x; __utmz=xxxxxxxxx.xxxxxxxxxx.x.x.utmccn=(referral)|utmcsr=reader.livedoor.com|utmcct=/reader/|utmcmd=referral\r\n\r\n";

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: tincan\r\nDate: Sat, 21 Nov 2026 23:00:00 GMT\r\nContent-Type: text/html\r\nContent-Length: 13\r\nLast-Modified: Sat, 21 Nov 2026 22:00:00 GMT\r\nETag: \"5f-d\"\r\n\r\nHello, world!";

fn request_heads(c: &mut Criterion) {
    let mut g = c.benchmark_group("httparse_request");
    for (name, head) in [("small", SMALL), ("browser", BROWSER)] {
        g.throughput(Throughput::Bytes(head.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let mut req = httparse::Request::new(&mut headers);
                black_box(req.parse(black_box(head)).expect("a valid head"));
            })
        });
    }
    g.finish();
}

fn response_heads(c: &mut Criterion) {
    let mut g = c.benchmark_group("bench_response_parser");
    g.throughput(Throughput::Bytes(RESPONSE.len() as u64));
    g.bench_function("head_and_13_byte_body", |b| {
        b.iter_batched_ref(
            || {
                let mut p = ResponseParser::new(false);
                p.start();
                p
            },
            |p| black_box(p.feed(black_box(RESPONSE)).expect("a valid response")),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, request_heads, response_heads);
criterion_main!(benches);
