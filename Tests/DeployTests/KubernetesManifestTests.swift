import Foundation
import OrderCore
import Testing

/// The Kubernetes manifests in deploy/k8s, parsed (never applied).
@Suite(.timeLimit(.minutes(1)))
struct KubernetesManifestTests {
    static let required: Set<String> = [
        "configmap.yaml", "secret.example.yaml", "deployment.yaml", "pdb.yaml", "keda-scaledobject.yaml",
        "job-init.yaml", "reference-services.yaml",
    ]

    /// Every manifest in deploy/k8s.
    static var files: [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: Repo.url("deploy/k8s").path)) ?? []
        return names.filter { $0.hasSuffix(".yaml") || $0.hasSuffix(".yml") }.sorted().map { "deploy/k8s/\($0)" }
    }

    /// Every object of every manifest, with the file it came from.
    static func objects() throws -> [(file: String, object: [String: Any])] {
        var result: [(file: String, object: [String: Any])] = []
        for file in files {
            for document in try Repo.yamlDocuments(file) {
                guard let object = document as? [String: Any] else {
                    throw DeployTestError("\(file): every document must be a mapping")
                }
                result.append((file, object))
            }
        }
        return result
    }

    static func object(kind: String, name: String) throws -> [String: Any] {
        let matches = try objects().filter { $0.object.string("kind") == kind && $0.object.map("metadata")?.string("name") == name }
        guard matches.count == 1 else { throw DeployTestError("expected one \(kind) \(name), found \(matches.count)") }
        return matches[0].object
    }

    /// Keys of a ConfigMap's or Secret's data.
    static func dataKeys(kind: String, name: String) throws -> Set<String> {
        let object = try object(kind: kind, name: name)
        var keys = Set((object.map("data") ?? [:]).keys)
        keys.formUnion((object.map("stringData") ?? [:]).keys)
        return keys
    }

    /// A pod's containers and init containers.
    static func containers(ofPodSpec spec: [String: Any]) -> [[String: Any]] {
        ((spec.list("initContainers") ?? []) + (spec.list("containers") ?? [])).compactMap { $0 as? [String: Any] }
    }

    static func podSpec(_ workload: [String: Any]) throws -> [String: Any] {
        guard let spec = workload.map("spec")?.map("template")?.map("spec") else {
            throw DeployTestError("\(workload.string("kind") ?? "?") has no pod template")
        }
        return spec
    }

    static func command(_ container: [String: Any]) -> [String] {
        ((container.list("command") ?? []) + (container.list("args") ?? [])).compactMap(scalarString)
    }

    /// The environment a container gets: envFrom ConfigMaps/Secrets (which must exist in the
    /// manifests), then `env` (literal values; references must name existing keys).
    static func environment(of container: [String: Any], where place: String) throws -> [String: String] {
        var env: [String: String] = [:]
        for source in (container.list("envFrom") ?? []).compactMap({ $0 as? [String: Any] }) {
            if let name = source.map("configMapRef")?.string("name") {
                let object = try object(kind: "ConfigMap", name: name)
                for (k, v) in object.map("data") ?? [:] { env[k] = scalarString(v) ?? "" }
            } else if let name = source.map("secretRef")?.string("name") {
                let object = try object(kind: "Secret", name: name)
                for (k, v) in (object.map("data") ?? [:]).merging(object.map("stringData") ?? [:], uniquingKeysWith: { $1 }) {
                    env[k] = scalarString(v) ?? ""
                }
            } else {
                Issue.record("\(place): unsupported envFrom source \(source)")
            }
        }
        for entry in (container.list("env") ?? []).compactMap({ $0 as? [String: Any] }) {
            guard let name = entry.string("name") else { Issue.record("\(place): env entry without a name"); continue }
            if let value = entry.string("value") {
                env[name] = value
            } else if let ref = entry.map("valueFrom") {
                if let r = ref.map("configMapKeyRef"), let cm = r.string("name"), let key = r.string("key") {
                    #expect(try dataKeys(kind: "ConfigMap", name: cm).contains(key), "\(place): ConfigMap \(cm) has no key \(key)")
                    env[name] = scalarString(try object(kind: "ConfigMap", name: cm).map("data")?[key] ?? "") ?? ""
                } else if let r = ref.map("secretKeyRef"), let secret = r.string("name"), let key = r.string("key") {
                    #expect(try dataKeys(kind: "Secret", name: secret).contains(key), "\(place): Secret \(secret) has no key \(key)")
                    env[name] = "secret"
                } else {
                    env[name] = "from-\(ref.keys.sorted().joined())"  // fieldRef, resourceFieldRef
                }
            } else {
                env[name] = ""
            }
        }
        return env
    }

    enum Program { case orderService, referenceService, other }

    /// Which of the image's programs a container runs (the image's default command is order-service).
    static func program(of container: [String: Any]) -> Program {
        switch command(container).first {
        case nil, "order-service": return .orderService
        case "product-service", "inventory-service": return .referenceService
        default: return .other
        }
    }

    // MARK: - Tests

    @Test func everyManifestParsesAndIsNamespaceAgnostic() throws {
        #expect(Set(Self.files.map { String($0.dropFirst("deploy/k8s/".count)) }).isSuperset(of: Self.required))
        let objects = try Self.objects()
        #expect(objects.count >= 10)
        for (file, object) in objects {
            #expect(object.string("apiVersion") != nil, "\(file): apiVersion")
            #expect(object.string("kind") != nil, "\(file): kind")
            #expect(object.map("metadata")?.string("name") != nil, "\(file): metadata.name")
            #expect(object.map("metadata")?["namespace"] == nil, "\(file): manifests must not set a namespace")
        }
    }

    @Test func topicsConfigMapEqualsTopicsYaml() throws {
        let configMap = try Self.object(kind: "ConfigMap", name: "order-service-topics")
        let embedded = try #require(configMap.map("data")?.string("topics.yaml"))
        let repository = try Repo.text("topics.yaml")
        #expect(embedded == repository, "the ConfigMap's topics.yaml differs from the repository's topics.yaml")
        // And the service reads both the same way.
        #expect(try Topics.parse(yaml: embedded) == Repo.topics())
        #expect(try Topics.parse(yaml: embedded).specs == Repo.topics().specs)
    }

    @Test func orderServiceEnvironmentIsWhatTheServiceReads() throws {
        var checked = 0
        for (file, object) in try Self.objects() where ["Deployment", "Job"].contains(object.string("kind")) {
            for container in Self.containers(ofPodSpec: try Self.podSpec(object)) {
                let place = "\(file) \(container.string("name") ?? "?")"
                let env = try Self.environment(of: container, where: place)
                switch Self.program(of: container) {
                case .orderService:
                    let config = try ServiceEnvironment.checkOrderService(env, where: place)
                    #expect(config.groupId == ServiceConfiguration().groupId, "\(place): group id")
                    #expect(env["ORDER_SERVICE_TOPICS_FILE"] != nil, "\(place): ORDER_SERVICE_TOPICS_FILE")
                    checked += 1
                case .referenceService:
                    try ServiceEnvironment.checkReferenceService(env, where: place)
                    checked += 1
                case .other:
                    Issue.record("\(place) runs \(Self.command(container)), not a program of the image")
                }
            }
        }
        #expect(checked >= 5)
    }

    @Test func deploymentRunsTheServiceAsSpecified() throws {
        let deployment = try Self.object(kind: "Deployment", name: "order-service")
        #expect(deployment.map("spec")?["replicas"] as? Int == 2)
        let pod = try Self.podSpec(deployment)
        let grace = try #require(pod["terminationGracePeriodSeconds"] as? Int)
        #expect(grace > 30, "the grace period must exceed the 30 s revoke drain")

        let containers = Self.containers(ofPodSpec: pod)
        #expect(containers.count == 1)
        let container = try #require(containers.first)
        #expect(Self.program(of: container) == .orderService)
        #expect(Self.command(container) == ["order-service"] || Self.command(container).isEmpty)

        let env = try Self.environment(of: container, where: "deployment")
        let config = try ServiceConfiguration.fromEnvironment(env)
        #expect(config.createTopics == false, "the init Job creates the topics")
        #expect(config.groupId == "order-service")
        #expect(env["ORDER_SERVICE_HEALTH_FILE"] == "/tmp/order-service.alive")
        #expect(env["DATABASE_URL"] != nil)

        // ORDER_SERVICE_TOPICS_FILE is the mounted topics ConfigMap.
        let topicsFile = try #require(env["ORDER_SERVICE_TOPICS_FILE"])
        let mounts = (container.list("volumeMounts") ?? []).compactMap { $0 as? [String: Any] }
        let mount = try #require(
            mounts.first { m in
                m.string("mountPath") == topicsFile && m.string("subPath") == "topics.yaml"
                    || (m.string("subPath") == nil && m.string("mountPath").map { $0 + "/topics.yaml" } == topicsFile)
            }, "no volume mounted at \(topicsFile)")
        let volumes = (pod.list("volumes") ?? []).compactMap { $0 as? [String: Any] }
        let volume = try #require(volumes.first { $0.string("name") == mount.string("name") })
        #expect(volume.map("configMap")?.string("name") == "order-service-topics")

        // The heartbeat file's directory is writable with a read-only root filesystem.
        if container.map("securityContext")?["readOnlyRootFilesystem"] as? Bool == true {
            #expect(mounts.contains { $0.string("mountPath") == "/tmp" }, "/tmp must be a writable volume")
        }

        let limits = try #require(container.map("resources")?.map("limits"))
        #expect(limits.string("memory") == "256Mi")
        #expect(container.map("resources")?.map("requests")?.string("memory") != nil)
        #expect(container.map("resources")?.map("requests")?.string("cpu") != nil)

        // Selector matches the pod labels.
        let selector = try #require(deployment.map("spec")?.map("selector")?.map("matchLabels"))
        let labels = try #require(deployment.map("spec")?.map("template")?.map("metadata")?.map("labels"))
        for (k, v) in selector { #expect(labels.string(k) == scalarString(v)) }
    }

    @Test func probesAreExecHealthAndNothingUsesHTTP() throws {
        for (file, object) in try Self.objects() {
            #expect(values(forKey: "httpGet", in: object).isEmpty, "\(file) uses an httpGet probe; the service has no HTTP server")
        }
        // What the probes exec really is a health check: the built order-service's `health`
        // subcommand exits 0 for a fresh heartbeat file and non-zero for a missing one.
        let heartbeat = FileManager.default.temporaryDirectory.appendingPathComponent("deploy-test-\(UUID().uuidString).alive").path
        try Data().write(to: URL(fileURLWithPath: heartbeat))
        defer { try? FileManager.default.removeItem(atPath: heartbeat) }
        let fresh = try Repo.runOrderService(["health", "--file", heartbeat])
        #expect(fresh.status == 0 && fresh.output.contains("healthy") && !fresh.output.contains("unhealthy"), "health with a fresh heartbeat: \(fresh)")
        let missing = try Repo.runOrderService(["health", "--file", heartbeat + ".missing"])
        #expect(missing.status != 0 && missing.output.contains("unhealthy"), "health without a heartbeat: \(missing)")

        let deployment = try Self.object(kind: "Deployment", name: "order-service")
        let container = try #require(Self.containers(ofPodSpec: try Self.podSpec(deployment)).first)
        // Liveness: progress (the heartbeat file); readiness: also settled in the consumer group.
        for (probe, expected) in [
            ("livenessProbe", ["order-service", "health"]), ("readinessProbe", ["order-service", "health", "--ready"]),
        ] {
            let p = try #require(container.map(probe), "\(probe) missing")
            let command = (p.map("exec")?.list("command") ?? []).compactMap(scalarString)
            #expect(command == expected, "\(probe) must exec \(expected.joined(separator: " "))")
        }
        #expect(try Repo.text("Sources/order-service/OrderServiceCommand.swift").contains("var ready"), "health has --ready")
        if let startup = container.map("startupProbe") {
            #expect((startup.map("exec")?.list("command") ?? []).compactMap(scalarString) == ["order-service", "health"])
        }
    }

    @Test func podDisruptionBudgetKeepsOneReplica() throws {
        let pdb = try Self.object(kind: "PodDisruptionBudget", name: "order-service")
        #expect(pdb.string("apiVersion") == "policy/v1")
        #expect(pdb.map("spec")?["minAvailable"] as? Int == 1)
        let selector = try #require(pdb.map("spec")?.map("selector")?.map("matchLabels"))
        let deployment = try Self.object(kind: "Deployment", name: "order-service")
        let labels = try #require(deployment.map("spec")?.map("template")?.map("metadata")?.map("labels"))
        for (k, v) in selector { #expect(labels.string(k) == scalarString(v), "PDB selector must match the order-service pods") }
        // The init Job's pods are not counted.
        let job = try Self.object(kind: "Job", name: "order-service-init")
        let jobLabels = try #require(job.map("spec")?.map("template")?.map("metadata")?.map("labels"))
        #expect(!selector.allSatisfy { jobLabels.string($0.key) == scalarString($0.value) })
    }

    @Test func kedaScalesOnTheRequestTopicsOfTheGroup() throws {
        let topics = try Repo.topics()
        let scaled = try Self.object(kind: "ScaledObject", name: "order-service")
        let spec = try #require(scaled.map("spec"))
        #expect(spec.map("scaleTargetRef")?.string("name") == "order-service")
        #expect(spec["minReplicaCount"] as? Int == 1)
        let maxReplicas = try #require(spec["maxReplicaCount"] as? Int)
        let requestPartitions = ["cart_requests", "order_requests"].map { Int(topics.entries[$0]!.spec.partitions) }
        #expect(maxReplicas <= requestPartitions.min()!, "more replicas than partitions would sit idle")
        #expect(maxReplicas == 8)

        let triggers = (spec.list("triggers") ?? []).compactMap { $0 as? [String: Any] }
        #expect(triggers.count == 2)
        var triggerTopics: Set<String> = []
        for trigger in triggers {
            #expect(trigger.string("type") == "kafka")
            let metadata = try #require(trigger.map("metadata"))
            #expect(metadata.string("consumerGroup") == ServiceConfiguration().groupId)
            let topic = try #require(metadata.string("topic"))
            let entry = topics.entries.values.first { $0.name == topic }
            #expect(entry != nil, "KEDA topic \(topic) is not in topics.yaml")
            #expect(entry?.role == .request)
            #expect(Int(metadata.string("lagThreshold") ?? "") != nil)
            #expect(metadata.string("offsetResetPolicy") == "earliest")
            triggerTopics.insert(topic)
            if let auth = trigger.map("authenticationRef")?.string("name") {
                let ta = try Self.object(kind: "TriggerAuthentication", name: auth)
                for ref in (ta.map("spec")?.list("secretTargetRef") ?? []).compactMap({ $0 as? [String: Any] }) {
                    let secret = try #require(ref.string("name"))
                    let key = try #require(ref.string("key"))
                    #expect(try Self.dataKeys(kind: "Secret", name: secret).contains(key), "TriggerAuthentication: Secret \(secret) has no key \(key)")
                }
            }
        }
        #expect(triggerTopics == [topics.cartRequests, topics.orderRequests])

        // The scaler's brokers and security match the service's configuration.
        let config = try Self.object(kind: "ConfigMap", name: "order-service-config").map("data") ?? [:]
        for trigger in triggers {
            let metadata = trigger.map("metadata") ?? [:]
            #expect(metadata.string("bootstrapServers") == config.string("KAFKA_BOOTSTRAP_SERVERS"))
            if config.string("KAFKA_SECURITY_PROTOCOL")?.uppercased() == "SASL_SSL" {
                #expect(metadata.string("tls") == "enable")
                let kedaMechanism = [
                    "SCRAM-SHA-512": "scram_sha512", "SCRAM-SHA-256": "scram_sha256", "PLAIN": "plaintext",
                    "OAUTHBEARER": "oauthbearer", "GSSAPI": "gssapi",
                ]
                #expect(metadata.string("sasl") == kedaMechanism[config.string("KAFKA_SASL_MECHANISM")?.uppercased() ?? ""])
            }
        }
    }

    @Test func initJobAppliesTopicsThenMigrates() throws {
        let job = try Self.object(kind: "Job", name: "order-service-init")
        let pod = try Self.podSpec(job)
        #expect(["OnFailure", "Never"].contains(pod.string("restartPolicy") ?? ""))
        // Init containers run in order, before the containers.
        let commands = Self.containers(ofPodSpec: pod).map { Self.command($0).joined(separator: " ") }
        let topics = try #require(commands.firstIndex { $0.contains("order-service topics apply") }, "no `order-service topics apply`")
        let migrate = try #require(commands.firstIndex { $0.contains("order-service migrate") }, "no `order-service migrate`")
        #expect(topics <= migrate)
        if topics == migrate {
            let shell = commands[topics]
            #expect(shell.range(of: "topics apply")!.lowerBound < shell.range(of: "migrate")!.lowerBound)
        }
    }

    @Test func secretExampleHoldsOnlyPlaceholders() throws {
        let keys = try Self.dataKeys(kind: "Secret", name: "order-service-secrets")
        #expect(keys.isSuperset(of: ["DATABASE_URL", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"]))
        let secret = try Self.object(kind: "Secret", name: "order-service-secrets").map("stringData") ?? [:]
        #expect(secret.string("KAFKA_SASL_PASSWORD") == "CHANGE_ME")
        #expect(secret.string("DATABASE_URL")?.contains(":CHANGE_ME@") == true)
        #expect(secret.string("DATABASE_URL")?.contains("sslmode=verify-full") == true)
        // Secrets never sit in the ConfigMap.
        let config = try Self.dataKeys(kind: "ConfigMap", name: "order-service-config")
        #expect(config.allSatisfy { !$0.contains("PASSWORD") && !$0.contains("SECRET") && $0 != "DATABASE_URL" })
    }

    @Test func everyImageRunsAProgramOfThePackage() throws {
        let products = try Repo.executableProducts()
        for (file, object) in try Self.objects() where ["Deployment", "Job"].contains(object.string("kind")) {
            for container in Self.containers(ofPodSpec: try Self.podSpec(object)) {
                if let program = Self.command(container).first {
                    #expect(products.contains(program), "\(file): \(program) is not an executable product")
                }
                if Self.program(of: container) == .referenceService {
                    let command = Self.command(container)
                    #expect(command.contains("--catalog") && command.contains("/app/catalog.json"))
                }
            }
        }
    }
}
