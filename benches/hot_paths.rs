//! Hot paths of a node, measured with criterion:
//! - the bus codec (encode, decode) and rendering an event's JSON frame,
//! - parsing a client frame,
//! - the local fan-out of one event to N local connections.
//!
//! Run: `cargo bench --bench hot_paths`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use huddle::codec;
use huddle::events::EventSink;
use huddle::gateway::Hub;
use huddle::gateway::hub::{Kill, Outbound, Subscriber};
use huddle::gateway::queue;
use huddle::metrics::Metrics;
use huddle::model::{Event, Message, MessageKind, User};
use huddle::protocol;

fn message() -> Message {
    Message {
        id: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
        room: "5f0c2b9e-1d2a-4c3b-9e8f-7a6b5c4d3e2f".into(),
        seq: 0,
        user: User {
            id: "8c1f2e3d-4b5a-6978-8a9b-1c2d3e4f5a6b".into(),
            name: "Ann".into(),
            image: Some("https://example.com/ann.png".into()),
        },
        kind: MessageKind::Text,
        content: "Hello everyone, how is the deploy going? Anything I can help with?".into(),
        attachment: None,
        created_at: 1_795_000_000_000,
        edited_at: None,
        deleted: false,
    }
}

fn codec_benches(c: &mut Criterion) {
    let event = Event::MessageCreated(message());
    let bytes = codec::encode(42, &event, 1);
    let envelope = codec::decode(&bytes).expect("decodes");
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode", |b| {
        b.iter(|| codec::encode(black_box(42), black_box(&event), 1))
    });
    g.bench_function("decode", |b| b.iter(|| codec::decode(black_box(&bytes))));
    g.bench_function("render_event_frame", |b| {
        b.iter(|| {
            protocol::event_frame(black_box("room"), envelope.seq, black_box(&envelope.event))
        })
    });
    let frame = r#"{"type":"message.send","id":17,"room":"5f0c2b9e-1d2a-4c3b-9e8f-7a6b5c4d3e2f","content":"Hello everyone, how is the deploy going?","client_msg_id":"c-123"}"#;
    g.bench_function("parse_client_frame", |b| {
        b.iter(|| protocol::parse(black_box(frame)))
    });
    g.finish();
}

fn fanout_benches(c: &mut Criterion) {
    let bytes = codec::encode(42, &Event::MessageCreated(message()), 1);
    let mut g = c.benchmark_group("fanout");
    for n in [10usize, 100, 1000] {
        let hub = Hub::new(Arc::new(Metrics::new()), std::time::Duration::ZERO);
        let room: Arc<str> = Arc::from("5f0c2b9e-1d2a-4c3b-9e8f-7a6b5c4d3e2f");
        let mut receivers = Vec::new();
        for id in 0..n {
            let (tx, rx) = queue::channel::<Outbound>(1024);
            hub.attach(
                &room,
                Subscriber {
                    id: id as u64,
                    tx,
                    kill: Arc::new(Kill::default()),
                    conn: Arc::from(format!("c{id}")),
                    user: Arc::default(),
                },
            );
            receivers.push(rx);
        }
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("deliver", n), &n, |b, _| {
            b.iter(|| {
                hub.deliver(black_box(&room), black_box(&bytes));
                for rx in &mut receivers {
                    while rx.try_recv().is_ok() {}
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, codec_benches, fanout_benches);
criterion_main!(benches);
