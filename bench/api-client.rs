//! The API benchmark's client (`bench/api.sh` builds and runs it): latencies of ListPods and
//! InspectPod over the service's Unix socket, and of pod-exit events (the time the client
//! receives a POD_EXITED event minus the exit time the stage1 recorded).
//!
//! `api-client SOCKET calls N` — N ListPods then N InspectPod (of every listed pod in turn);
//! prints `list_pods <count> p50 p99` and `inspect_pod p50 p99` in milliseconds.
//! `api-client SOCKET events N` — prints `ready`, then waits for N pod exits and prints
//! `pod_exit_event p50 p99 max` in milliseconds.

use std::time::{Duration, Instant};

use orbit::api::proto::{self, public_api_client::PublicApiClient};
use tonic::transport::Channel;

async fn channel(socket: String) -> Channel {
    orbit::grpc::unix_channel(socket)
        .await
        .expect("the API socket")
}

fn percentiles(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| ms(v[((v.len() as f64 - 1.0) * q).round() as usize]);
    (at(0.5), at(0.99), ms(*v.last().expect("samples")))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (socket, mode, n) = match args.as_slice() {
        [_, s, m, n] => (s.clone(), m.clone(), n.parse::<usize>().expect("N")),
        _ => panic!("usage: api-client SOCKET calls|events N"),
    };
    let mut c = PublicApiClient::new(channel(socket).await);
    match mode.as_str() {
        "calls" => {
            let mut list = Vec::new();
            let mut ids = Vec::new();
            for _ in 0..n {
                let t = Instant::now();
                let pods = c
                    .list_pods(proto::ListPodsRequest::default())
                    .await
                    .expect("ListPods")
                    .into_inner()
                    .pods;
                list.push(t.elapsed());
                ids = pods.into_iter().map(|p| p.id).collect();
            }
            let (p50, p99, _) = percentiles(list);
            println!("list_pods {} {p50:.2} {p99:.2}", ids.len());
            let mut inspect = Vec::new();
            for i in 0..n {
                let id = ids[i % ids.len()].clone();
                let t = Instant::now();
                c.inspect_pod(proto::InspectPodRequest { id })
                    .await
                    .expect("InspectPod");
                inspect.push(t.elapsed());
            }
            let (p50, p99, _) = percentiles(inspect);
            println!("inspect_pod {p50:.2} {p99:.2}");
        }
        "events" => {
            let filter = proto::EventFilter {
                types: vec![proto::EventType::PodExited as i32],
                ..Default::default()
            };
            let mut s = c
                .listen_events(proto::ListenEventsRequest {
                    filter: Some(filter),
                })
                .await
                .expect("ListenEvents")
                .into_inner();
            println!("ready");
            let mut lat = Vec::new();
            while lat.len() < n {
                let m = s
                    .message()
                    .await
                    .expect("events")
                    .expect("the stream ended");
                let now = orbit::clock::now_nanos();
                for e in m.events {
                    lat.push(Duration::from_nanos((now - e.time).max(0) as u64));
                }
            }
            let (p50, p99, max) = percentiles(lat);
            println!("pod_exit_event {p50:.2} {p99:.2} {max:.2}");
        }
        m => panic!("unknown mode {m}"),
    }
}
