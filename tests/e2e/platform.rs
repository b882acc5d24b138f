//! Health, reflection and graceful shutdown.

use std::time::Duration;

use patron_proto::customers::v1 as pb;
use tokio_stream::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::support::{Backend, purchase, spawn_app, ts};

const CUSTOMERS: &str = "patron.customers.v1.CustomerService";

async fn health_reports_each_service(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut health = HealthClient::new(app.channel.clone());
    for service in ["", CUSTOMERS] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("check")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let err = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .expect_err("unknown service");
    assert_eq!(err.code(), tonic::Code::NotFound);
}

async fn reflection_lists_and_describes_services(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = ServerReflectionClient::new(app.channel.clone());
    let requests = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(CUSTOMERS.into())),
        },
    ];
    let mut responses = client
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .expect("reflection")
        .into_inner();
    let first = responses.next().await.expect("a response").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = first.message_response else {
        panic!("expected a service list, got {first:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        CUSTOMERS,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    let second = responses.next().await.expect("a response").expect("ok");
    let Some(MessageResponse::FileDescriptorResponse(files)) = second.message_response else {
        panic!("expected file descriptors, got {second:?}");
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

/// Reflection serves `google.rpc`'s error details, and every file they import, so reflection
/// clients (buf curl, grpcurl) decode an error's details instead of showing bytes.
async fn reflection_serves_error_details(backend: Backend) {
    use prost::Message;
    let app = spawn_app(backend).await;
    let mut client = ServerReflectionClient::new(app.channel.clone());
    let ask = |request: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut pending: Vec<MessageRequest> = [
        "google.rpc.BadRequest",
        "google.rpc.ErrorInfo",
        "google.rpc.RetryInfo",
        "google.rpc.Status",
    ]
    .into_iter()
    .map(|s| MessageRequest::FileContainingSymbol(s.into()))
    .collect();
    let mut seen = std::collections::BTreeSet::new();
    let mut messages = std::collections::BTreeSet::new();
    while let Some(request) = pending.pop() {
        let mut responses = client
            .server_reflection_info(tokio_stream::iter(vec![ask(request.clone())]))
            .await
            .expect("reflection")
            .into_inner();
        let response = responses.next().await.expect("a response").expect("ok");
        let Some(MessageResponse::FileDescriptorResponse(files)) = response.message_response else {
            panic!("{request:?}: expected file descriptors, got {response:?}");
        };
        for bytes in files.file_descriptor_proto {
            let file = prost_types::FileDescriptorProto::decode(bytes.as_slice()).expect("a file");
            let package = file.package().to_owned();
            for m in &file.message_type {
                messages.insert(format!("{package}.{}", m.name()));
            }
            for dep in &file.dependency {
                if seen.insert(dep.clone()) {
                    pending.push(MessageRequest::FileByFilename(dep.clone()));
                }
            }
        }
    }
    for want in [
        "google.rpc.BadRequest",
        "google.rpc.ErrorInfo",
        "google.rpc.RetryInfo",
        "google.rpc.Status",
        "google.protobuf.Any",
        "google.protobuf.Duration",
    ] {
        assert!(messages.contains(want), "{want} missing from {messages:?}");
    }
}

async fn shutdown_reports_not_serving_and_finishes_in_flight_calls(backend: Backend) {
    let mut app = spawn_app(backend).await;
    let mut health = HealthClient::new(app.channel.clone());
    let mut watch = health
        .watch(HealthCheckRequest {
            service: CUSTOMERS.into(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.next().await.expect("status").expect("ok");
    assert_eq!(first.status, ServingStatus::Serving as i32);

    // A bulk load is in flight when the shutdown signal arrives.
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::StreamEventsRequest>(4);
    let mut client = app.customers.clone();
    let call = tokio::spawn(async move {
        client
            .stream_events(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    let chunk = |from: usize| pb::StreamEventsRequest {
        events: (from..from + 100)
            .map(|i| {
                purchase(
                    "late",
                    &format!("e{i}"),
                    ts(1, i as i64),
                    &format!("o{i}"),
                    5,
                )
            })
            .collect(),
    };
    tx.send(chunk(0)).await.expect("send");
    tokio::time::sleep(Duration::from_millis(100)).await;
    app.signal_shutdown();

    let next = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("a status change")
        .expect("status")
        .expect("ok");
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    drop(watch);

    // The in-flight call still completes, with everything it sent.
    tx.send(chunk(100)).await.expect("send after the signal");
    drop(tx);
    let out = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the call finishes")
        .expect("task")
        .expect("stream call succeeds")
        .into_inner();
    assert_eq!(out.recorded_count, 200);
    tokio::time::timeout(Duration::from_secs(20), app.join())
        .await
        .expect("server stops");
}

crate::both_backends!(
    health_reports_each_service,
    reflection_lists_and_describes_services,
    reflection_serves_error_details,
    shutdown_reports_not_serving_and_finishes_in_flight_calls,
);
