//! Streams generated purchase events to a running Patron over `StreamEvents` and reports the
//! rate. Events are generated lazily, so the client holds one chunk at a time.
//!
//! `cargo run --release -p patron-server --example ingest -- ADDR EVENTS CUSTOMERS CHUNK`
//! e.g. `… -- 127.0.0.1:50051 1000000 100000 5000`.

use std::time::Instant;

use patron_proto::common::v1::Money;
use patron_proto::customers::v1 as pb;
use patron_proto::customers::v1::customer_service_client::CustomerServiceClient;

fn event(i: u64, customers: u64) -> pb::Event {
    // A cheap deterministic spread of customers, days and amounts.
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let customer = h % customers;
    let day = (h >> 20) % 730;
    pb::Event {
        event_id: format!("ing-{i}"),
        customer_id: format!("cust-{customer}"),
        occurred_at: Some(prost_types::Timestamp {
            seconds: 1_700_000_000 + (day * 86_400 + (h >> 40) % 86_400) as i64,
            nanos: 0,
        }),
        kind: Some(pb::event::Kind::Purchase(pb::Purchase {
            order_id: String::new(),
            amount: Some(Money {
                currency_code: "USD".into(),
                minor_units: 500 + ((h >> 8) % 20_000) as i64,
            }),
            item_count: 1 + ((h >> 30) % 4) as i32,
            channel: "web".into(),
        })),
        record_time: None,
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_owned());
    let addr = arg(1, "127.0.0.1:50051");
    let total: u64 = arg(2, "1000000").parse()?;
    let customers: u64 = arg(3, "100000").parse()?;
    let chunk: u64 = arg(4, "5000").parse()?;
    let mut client = CustomerServiceClient::connect(format!("http://{addr}"))
        .await?
        .max_encoding_message_size(64 * 1024 * 1024);
    let chunks = (0..total.div_ceil(chunk)).map(move |c| pb::StreamEventsRequest {
        events: (c * chunk..((c + 1) * chunk).min(total))
            .map(|i| event(i, customers))
            .collect(),
    });
    let started = Instant::now();
    let out = client
        .stream_events(tokio_stream::iter(chunks))
        .await?
        .into_inner();
    let secs = started.elapsed().as_secs_f64();
    let rate = out.received_count as f64 / secs;
    eprintln!(
        "received {} recorded {} duplicates {} rejected {} in {secs:.2} s: {rate:.0} events/s",
        out.received_count, out.recorded_count, out.duplicate_count, out.rejected_count
    );
    #[allow(clippy::print_stdout)]
    {
        println!(
            "{{\"events\":{},\"recorded\":{},\"seconds\":{secs:.3},\"events_per_second\":{rate:.0}}}",
            out.received_count, out.recorded_count
        );
    }
    Ok(())
}
