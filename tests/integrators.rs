//! What integrators in other languages rely on: reflection in both protocol versions
//! (grpcurl before 1.8.8 and Python's grpcio-reflection speak only v1alpha), listing every
//! service and the health service; health per service.

mod common;

use common::{TestPki, TestServer, node};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client};
use tonic_reflection::pb::{
    v1,
    v1alpha::{
        self, server_reflection_request::MessageRequest as Ask,
        server_reflection_response::MessageResponse as Answer,
    },
};

/// Every service the server offers, by its full name.
const SERVICES: [&str; 5] = [
    "tidemark.v1.Exchange",
    "tidemark.v1.Analytics",
    "tidemark.v1.Admin",
    "tidemark.v1.Transparency",
    "grpc.health.v1.Health",
];

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_every_service_and_describe_a_method() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let channel = server.channel(&node(&pki, "AUS")).await;

    let listed = v1::server_reflection_client::ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::iter([v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        }]))
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        listed.message_response
    else {
        panic!("{listed:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in SERVICES {
        assert!(names.iter().any(|n| n == service), "{service} in {names:?}");
    }

    // v1alpha: the same list, and a method's file by symbol (what `grpcurl describe` asks).
    let mut alpha = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let ask = |request| v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut answers = alpha
        .server_reflection_info(tokio_stream::iter([
            ask(Ask::ListServices(String::new())),
            ask(Ask::FileContainingSymbol(
                "tidemark.v1.Exchange.Submit".to_owned(),
            )),
        ]))
        .await
        .unwrap()
        .into_inner();
    let Some(Answer::ListServicesResponse(list)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("no service list over v1alpha")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in SERVICES {
        assert!(names.iter().any(|n| n == service), "{service} in {names:?}");
    }
    let Some(Answer::FileDescriptorResponse(files)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("no file for tidemark.v1.Exchange.Submit over v1alpha")
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

#[tokio::test]
async fn health_answers_serving_for_every_service() {
    let pki = TestPki::new();
    let server = TestServer::start(&pki).await;
    let mut health = health_client::HealthClient::new(server.channel(&node(&pki, "AUS")).await);
    for service in SERVICES
        .iter()
        .filter(|s| s.starts_with("tidemark"))
        .chain(&[""])
    {
        let answer = health
            .check(HealthCheckRequest {
                service: (*service).to_owned(),
            })
            .await
            .unwrap_or_else(|e| panic!("{service:?}: {e}"))
            .into_inner();
        assert_eq!(answer.status, ServingStatus::Serving as i32, "{service:?}");
    }
}
