//! End-to-end tests of the local node agent against the real local cluster (started
//! through the harness when none is running).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use iq720_tests::{
    Cluster, TestNamespace, apply_yaml, container_pid, http, pid_alive, pod_ip, pod_log, pod_ready,
    poll_until, wait_for_condition, wait_for_deletion,
};
use k8s_openapi::api::core::v1::{
    ContainerStatus, Node, PersistentVolume, PersistentVolumeClaim, Pod,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Api;
use kube::api::DeleteParams;

const READY_TIMEOUT: Duration = Duration::from_secs(120);

async fn setup() -> (Cluster, TestNamespace) {
    let cluster = Cluster::shared().await.expect("local cluster");
    let ns = TestNamespace::new(&cluster).await.expect("namespace");
    (cluster, ns)
}

async fn ready_pod(cluster: &Cluster, ns: &str, name: &str) -> Pod {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    match wait_for_condition(&pods, name, pod_ready(), READY_TIMEOUT).await {
        Ok(p) => p,
        Err(e) => {
            let p = pods.get_opt(name).await.ok().flatten();
            panic!(
                "pod {ns}/{name} not ready: {e}; status: {:#?}",
                p.and_then(|p| p.status)
            );
        }
    }
}

fn addr(pod: &Pod, port: u16) -> String {
    let ip = pod_ip(pod).expect("pod IP");
    format!("{ip}:{port}")
}

async fn get_text(addr: &str, path: &str) -> (u16, String) {
    let r = http::get(addr, path).await.expect("http get");
    (r.status, r.text())
}

#[tokio::test]
async fn node_is_ready_and_default_storage_class_exists() {
    let cluster = Cluster::shared().await.expect("local cluster");
    let node = Api::<Node>::all(cluster.client.clone())
        .get(&cluster.env.node_name())
        .await
        .unwrap();
    let status = node.status.unwrap();
    let ready = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "True");
    assert_eq!(status.node_info.unwrap().kubelet_version, "v1.34.4");
    assert!(
        status
            .addresses
            .unwrap()
            .iter()
            .any(|a| a.type_ == "InternalIP" && a.address == "127.0.0.1")
    );
    assert_eq!(status.allocatable.unwrap()["pods"].0, "110");

    let sc = Api::<StorageClass>::all(cluster.client.clone())
        .get("local-dir")
        .await
        .unwrap();
    assert_eq!(sc.provisioner, "iq720.io/local-dir");
    assert_eq!(
        sc.metadata
            .annotations
            .unwrap()
            .get("storageclass.kubernetes.io/is-default-class")
            .map(String::as_str),
        Some("true")
    );
}

const STATEFULSET: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {token: one}
---
apiVersion: v1
kind: Service
metadata: {name: tp}
spec:
  clusterIP: None
  selector: {app: tp}
  ports: [{name: http, port: 8080}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: tp}
spec:
  serviceName: tp
  replicas: 1
  selector: {matchLabels: {app: tp}}
  template:
    metadata: {labels: {app: tp}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: main
        image: iq720.io/testproc:latest
        args: ["--port", "8080", "--dir", "data=/data", "--dir", "secret=/etc/creds"]
        env:
        - name: POD_IP
          valueFrom: {fieldRef: {fieldPath: status.podIP}}
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /healthz, port: http}
          periodSeconds: 1
        volumeMounts:
        - {name: data, mountPath: /data}
        - {name: creds, mountPath: /etc/creds, readOnly: true}
      volumes:
      - name: creds
        secret: {secretName: creds}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 10Mi}}
"#;

#[tokio::test]
async fn statefulset_with_pvc_and_secret_volume() {
    let (cluster, ns) = setup().await;
    apply_yaml(&cluster.client, Some(ns.name()), STATEFULSET)
        .await
        .unwrap();
    let pod = ready_pod(&cluster, ns.name(), "tp-0").await;
    let ip = pod_ip(&pod).unwrap();
    assert!(ip.starts_with("127."), "pod IP {ip} is not loopback");
    let a = addr(&pod, 8080);

    // The claim was provisioned by the agent: bound to a hostPath PV in its state dir.
    let pvc = Api::<PersistentVolumeClaim>::namespaced(cluster.client.clone(), ns.name())
        .get("data-tp-0")
        .await
        .unwrap();
    assert_eq!(pvc.status.unwrap().phase.as_deref(), Some("Bound"));
    let pv = Api::<PersistentVolume>::all(cluster.client.clone())
        .get(&pvc.spec.unwrap().volume_name.unwrap())
        .await
        .unwrap();
    let host_path = pv.spec.unwrap().host_path.unwrap().path;
    assert!(
        host_path.starts_with(&*cluster.env.node_dir().to_string_lossy()),
        "{host_path}"
    );

    // Data written to the PVC.
    let payload = format!("persisted-{}", ns.name());
    let w = http::request(&a, "POST", "/write?path=data/keep.txt", payload.as_bytes())
        .await
        .unwrap();
    assert_eq!(w.status, 200, "{}", w.text());
    assert_eq!(
        std::fs::read_to_string(format!("{host_path}/keep.txt")).unwrap(),
        payload
    );

    // The secret volume, then an update of the Secret reaching the mounted file.
    assert_eq!(
        get_text(&a, "/file?path=secret/token").await,
        (200, "one".to_string())
    );
    apply_yaml(
        &cluster.client,
        Some(ns.name()),
        "apiVersion: v1\nkind: Secret\nmetadata: {name: creds}\nstringData: {token: two}\n",
    )
    .await
    .unwrap();
    let started = Instant::now();
    poll_until(
        "secret update in the volume",
        Duration::from_secs(30),
        Duration::from_millis(250),
        || {
            let a = a.clone();
            async move { (get_text(&a, "/file?path=secret/token").await.1 == "two").then_some(()) }
        },
    )
    .await
    .unwrap();
    eprintln!("secret update visible after {:?}", started.elapsed());

    // Delete the pod: the StatefulSet makes a new one, which sees the same data.
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), ns.name());
    let old_uid = pod.metadata.uid.clone().unwrap();
    pods.delete("tp-0", &DeleteParams::default()).await.unwrap();
    wait_for_deletion(&pods, "tp-0", &old_uid, Duration::from_secs(60))
        .await
        .unwrap();
    let new_pod = ready_pod(&cluster, ns.name(), "tp-0").await;
    assert_ne!(new_pod.metadata.uid.as_deref(), Some(old_uid.as_str()));
    let a2 = addr(&new_pod, 8080);
    assert_eq!(
        get_text(&a2, "/file?path=data/keep.txt").await,
        (200, payload)
    );
    assert_eq!(
        get_text(&a2, "/file?path=secret/token").await,
        (200, "two".to_string())
    );
}

#[tokio::test]
async fn deleting_a_pod_stops_its_process_then_releases_it() {
    let (cluster, ns) = setup().await;
    apply_yaml(
        &cluster.client,
        Some(ns.name()),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: graceful}
spec:
  terminationGracePeriodSeconds: 10
  containers:
  - name: main
    image: iq720.io/testproc:latest
    args: ["--term-delay", "1"]
---
apiVersion: v1
kind: Pod
metadata: {name: stubborn}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: iq720.io/testproc:latest
    args: ["--ignore-term"]
"#,
    )
    .await
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), ns.name());
    for (name, min, max) in [("graceful", 1.0, 9.0), ("stubborn", 2.0, 9.0)] {
        let pod = ready_pod(&cluster, ns.name(), name).await;
        let pid = container_pid(&pod, "main").expect("pid in containerID");
        assert!(pid_alive(pid), "{name}: process {pid} should run");
        let uid = pod.metadata.uid.clone().unwrap();
        let t0 = Instant::now();
        pods.delete(name, &DeleteParams::default()).await.unwrap();
        wait_for_deletion(&pods, name, &uid, Duration::from_secs(30))
            .await
            .unwrap();
        let took = t0.elapsed().as_secs_f64();
        eprintln!("{name}: pod gone {took:.2}s after delete");
        assert!(!pid_alive(pid), "{name}: process {pid} survived its pod");
        assert!(
            took >= min && took <= max,
            "{name}: took {took:.2}s, expected {min}..{max}s"
        );
        let log = std::fs::read_to_string(iq720_tests::log_path(&cluster, &uid, "main")).unwrap();
        assert!(
            log.contains("SIGTERM received"),
            "{name}: SIGTERM not delivered: {log}"
        );
    }
}

#[tokio::test]
async fn env_from_field_refs_secrets_and_configmaps() {
    let (cluster, ns) = setup().await;
    apply_yaml(
        &cluster.client,
        Some(ns.name()),
        r#"
apiVersion: v1
kind: Secret
metadata: {name: s}
stringData: {password: hunter2}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm}
data: {mode: paper, "app.yaml": "exchange: sim\n"}
---
apiVersion: v1
kind: Pod
metadata: {name: envpod, labels: {app: envpod}}
spec:
  containers:
  - name: main
    image: iq720.io/testproc:latest
    args: ["--listen", "$(POD_IP):8081"]
    readinessProbe:
      httpGet: {path: /healthz, port: 8081}
      periodSeconds: 1
    envFrom:
    - configMapRef: {name: cm}
      prefix: CFG_
    env:
    - name: POD_IP
      valueFrom: {fieldRef: {fieldPath: status.podIP}}
    - name: POD_NS
      valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
    - name: NODE
      valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
    - name: PASSWORD
      valueFrom: {secretKeyRef: {name: s, key: password}}
    - name: MODE
      valueFrom: {configMapKeyRef: {name: cm, key: mode}}
    - name: MISSING
      valueFrom: {configMapKeyRef: {name: cm, key: nope, optional: true}}
    - name: URL
      value: "http://$(POD_IP):8081/$$(NOT_EXPANDED)"
    - name: CONFIG
      value: /etc/iq720/app.yaml
    volumeMounts:
    - {name: cfg, mountPath: /etc/iq720}
  volumes:
  - name: cfg
    configMap: {name: cm}
"#,
    )
    .await
    .unwrap();
    let pod = ready_pod(&cluster, ns.name(), "envpod").await;
    let ip = pod_ip(&pod).unwrap();
    let a = format!("{ip}:8081");
    let env = |name: &'static str| {
        let a = a.clone();
        async move { get_text(&a, &format!("/env?name={name}")).await }
    };
    assert_eq!(env("POD_IP").await, (200, ip.clone()));
    assert_eq!(env("POD_NS").await, (200, ns.name().to_string()));
    assert_eq!(env("NODE").await, (200, cluster.env.node_name()));
    assert_eq!(env("PASSWORD").await, (200, "hunter2".to_string()));
    assert_eq!(env("MODE").await, (200, "paper".to_string()));
    assert_eq!(env("CFG_mode").await, (200, "paper".to_string()));
    assert_eq!(env("MISSING").await.0, 404);
    assert_eq!(
        env("URL").await,
        (200, format!("http://{ip}:8081/$(NOT_EXPANDED)"))
    );
    // The mount path in the env value was rewritten to the real volume directory.
    let (code, config) = env("CONFIG").await;
    assert_eq!(code, 200);
    assert!(config.ends_with("/volumes/cfg/app.yaml"), "{config}");
    assert_eq!(
        get_text(&a, &format!("/file?path={}", http::encode(&config))).await,
        (200, "exchange: sim\n".to_string())
    );
    let log = pod_log(&cluster, ns.name(), "envpod", "main")
        .await
        .unwrap();
    assert!(log.contains(&format!("listening on {ip}:8081")), "{log}");
    // The same through the apiserver (kubectl logs → the agent's kubelet API).
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), ns.name());
    let params = kube::api::LogParams {
        container: Some("main".into()),
        ..Default::default()
    };
    let via_api = pods.logs("envpod", &params).await.unwrap();
    assert!(
        via_api.contains(&format!("listening on {ip}:8081")),
        "{via_api}"
    );
}

#[tokio::test]
async fn unknown_image_waits_with_err_image_pull() {
    let (cluster, ns) = setup().await;
    apply_yaml(
        &cluster.client,
        Some(ns.name()),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: nope}\nspec:\n  containers:\n  - {name: main, image: 'iq720.io/not-mapped:1.0'}\n",
    )
    .await
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), ns.name());
    let pod = wait_for_condition(
        &pods,
        "nope",
        |p: Option<&Pod>| {
            matches!(
                first_container(p).and_then(waiting_reason).as_deref(),
                Some("ErrImagePull" | "ImagePullBackOff")
            )
        },
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Pending"));
}

/// Status of the pod's first container.
fn first_container(p: Option<&Pod>) -> Option<&ContainerStatus> {
    p?.status.as_ref()?.container_statuses.as_ref()?.first()
}

/// Reason of a waiting container.
fn waiting_reason(c: &ContainerStatus) -> Option<String> {
    c.state.as_ref()?.waiting.as_ref()?.reason.clone()
}

#[tokio::test]
async fn crashing_container_restarts_with_back_off() {
    let (cluster, ns) = setup().await;
    apply_yaml(
        &cluster.client,
        Some(ns.name()),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: crash}
spec:
  containers:
  - name: main
    image: iq720.io/testproc:latest
    args: ["--exit-after", "1", "--exit-code", "3"]
"#,
    )
    .await
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), ns.name());
    let pod = wait_for_condition(
        &pods,
        "crash",
        |p: Option<&Pod>| {
            first_container(p).and_then(waiting_reason).as_deref() == Some("CrashLoopBackOff")
        },
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let cs = pod
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .clone();
    assert!(cs.restart_count >= 1, "restartCount {}", cs.restart_count);
    let last = cs.last_state.unwrap().terminated.unwrap();
    assert_eq!(last.exit_code, 3);
    assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Running"));
}

#[tokio::test]
async fn liveness_failure_restarts_and_init_containers_run_first() {
    let (cluster, ns) = setup().await;
    apply_yaml(
        &cluster.client,
        Some(ns.name()),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: probed}
spec:
  initContainers:
  - name: init
    image: iq720.io/testproc:latest
    args: ["--exit-after", "0", "--port", "8090"]
  containers:
  - name: main
    image: iq720.io/testproc:latest
    livenessProbe:
      tcpSocket: {port: 9}
      periodSeconds: 1
      failureThreshold: 2
    startupProbe:
      httpGet: {path: /healthz, port: 8080}
      periodSeconds: 1
"#,
    )
    .await
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), ns.name());
    let pod = wait_for_condition(
        &pods,
        "probed",
        |p: Option<&Pod>| first_container(p).is_some_and(|c| c.restart_count >= 1),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let status = pod.status.unwrap();
    let init = &status.init_container_statuses.as_ref().unwrap()[0];
    let t = init.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
    let main = &status.container_statuses.as_ref().unwrap()[0];
    let last = main
        .last_state
        .as_ref()
        .unwrap()
        .terminated
        .as_ref()
        .unwrap();
    assert!(
        last.message
            .as_deref()
            .unwrap_or_default()
            .contains("Liveness probe failed"),
        "{last:?}"
    );
}

#[tokio::test]
async fn service_account_kubeconfig_and_restart_never() {
    let (cluster, ns) = setup().await;
    let kubectl = ["/usr/local/bin/kubectl", "/usr/bin/kubectl"]
        .into_iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
        .expect("kubectl installed");
    cluster
        .map_image("iq720.io/kubectl:test", &kubectl, &[])
        .unwrap();
    apply_yaml(
        &cluster.client,
        Some(ns.name()),
        r#"
apiVersion: v1
kind: Pod
metadata: {name: whoami}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: iq720.io/kubectl:test
    args: ["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"]
"#,
    )
    .await
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), ns.name());
    let pod = wait_for_condition(
        &pods,
        "whoami",
        |p: Option<&Pod>| {
            matches!(
                p.and_then(|p| p.status.as_ref())
                    .and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        },
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let log = pod_log(&cluster, ns.name(), "whoami", "main")
        .await
        .unwrap();
    assert_eq!(
        pod.status.unwrap().phase.as_deref(),
        Some("Succeeded"),
        "{log}"
    );
    assert_eq!(
        log.trim(),
        format!("system:serviceaccount:{}:default", ns.name())
    );
}

#[tokio::test]
async fn volumes_are_mounted_at_their_paths_in_a_private_namespace() {
    if !iq720_tests::localnode::process::mount_namespaces() {
        eprintln!("skipped: mount namespaces are not available on this machine");
        return;
    }
    let (cluster, ns) = setup().await;
    apply_yaml(
        &cluster.client,
        Some(ns.name()),
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: cm}
data: {"app.yaml": "hello\n"}
---
apiVersion: v1
kind: Pod
metadata: {name: mnt}
spec:
  containers:
  - name: main
    image: iq720.io/testproc:latest
    startupProbe:
      httpGet: {path: /healthz, port: 8080}
      periodSeconds: 1
    readinessProbe:
      exec: {command: ["cat", "/tmp/iq720-mnt-test/cfg/app.yaml"]}
      periodSeconds: 1
    volumeMounts:
    - {name: cfg, mountPath: /tmp/iq720-mnt-test/cfg}
    - {name: scratch, mountPath: /tmp/iq720-mnt-test/scratch}
  volumes:
  - {name: cfg, configMap: {name: cm}}
  - {name: scratch, emptyDir: {}}
"#,
    )
    .await
    .unwrap();
    // Ready means the exec probe found the file at its mount path (inside the namespace).
    let pod = ready_pod(&cluster, ns.name(), "mnt").await;
    let a = addr(&pod, 8080);
    assert_eq!(
        get_text(&a, "/file?path=/tmp/iq720-mnt-test/cfg/app.yaml").await,
        (200, "hello\n".to_string())
    );
    let sa_ns = get_text(
        &a,
        "/file?path=/var/run/secrets/kubernetes.io/serviceaccount/namespace",
    )
    .await;
    assert_eq!(sa_ns, (200, ns.name().to_string()));
    let w = http::request(
        &a,
        "POST",
        "/write?path=/tmp/iq720-mnt-test/scratch/x",
        b"42",
    )
    .await
    .unwrap();
    assert_eq!(w.status, 200, "{}", w.text());
    let uid = pod.metadata.uid.clone().unwrap();
    let real = cluster
        .env
        .node_dir()
        .join("pods")
        .join(uid)
        .join("volumes/scratch/x");
    assert_eq!(std::fs::read_to_string(real).unwrap(), "42");
    assert!(
        !std::path::Path::new("/tmp/iq720-mnt-test/scratch/x").exists(),
        "the bind mount leaked to the host"
    );
}
