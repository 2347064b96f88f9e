import Foundation
import OrderCore
import Testing

/// deploy/docker/compose.yaml, parsed (never run).
@Suite(.timeLimit(.minutes(1)))
struct ComposeTests {
    static let path = "deploy/docker/compose.yaml"

    static func services() throws -> [String: [String: Any]] {
        let compose = try Repo.yamlMapping(path)
        let services = try #require(compose.map("services"))
        return services.compactMapValues { $0 as? [String: Any] }
    }

    static func command(_ service: [String: Any]) -> [String] {
        if let list = service.list("command") { return list.compactMap(scalarString) }
        if let text = service.string("command") { return text.split(separator: " ").map(String.init) }
        return []
    }

    /// A service's environment, from the mapping or the `KEY=value` list form.
    static func environment(_ service: [String: Any]) -> [String: String] {
        if let mapping = service.map("environment") { return mapping.compactMapValues(scalarString) }
        var env: [String: String] = [:]
        for item in (service.list("environment") ?? []).compactMap(scalarString) {
            let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
            env[parts[0]] = parts.count > 1 ? parts[1] : ""
        }
        return env
    }

    /// Services built from this repository's image (deploy/docker/Dockerfile).
    static func imageServices() throws -> [String: [String: Any]] {
        try services().filter { _, service in
            service.map("build")?.string("dockerfile") == "deploy/docker/Dockerfile" || service.string("image") == "order-service:local"
        }
    }

    static func isOrderService(_ service: [String: Any]) -> Bool {
        let first = command(service).first
        return first == nil || first == "order-service"
    }

    /// The image's services that run the order service itself (no subcommand).
    static func serviceRunners() throws -> [String: [String: Any]] {
        try imageServices().filter { isOrderService($0.value) && command($0.value).count <= 1 }
    }

    static func replicas(_ service: [String: Any]) -> Int {
        service.map("deploy")?["replicas"] as? Int ?? 1
    }

    static func dependency(_ service: [String: Any], on other: String) -> String? {
        if let list = service.list("depends_on") { return list.compactMap(scalarString).contains(other) ? "service_started" : nil }
        guard let entry = service.map("depends_on")?[other] else { return nil }
        return (entry as? [String: Any])?.string("condition") ?? "service_started"
    }

    @Test func kafkaRunsInKRaftModeWithAHealthCheck() throws {
        let services = try Self.services()
        let kafka = try #require(services["kafka"], "no kafka service")
        #expect(kafka.string("image")?.hasPrefix("apache/kafka:") == true)
        let env = Self.environment(kafka)
        let roles = Set((env["KAFKA_PROCESS_ROLES"] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
        #expect(roles.contains("controller"), "KRaft: the node must be a controller")
        #expect(roles.contains("broker"))
        #expect(env["KAFKA_NODE_ID"] != nil)
        #expect(env["KAFKA_CONTROLLER_QUORUM_VOTERS"]?.hasPrefix("\(env["KAFKA_NODE_ID"] ?? "?")@") == true)
        #expect(env["KAFKA_CONTROLLER_LISTENER_NAMES"] != nil)
        let controllerName = try #require(env["KAFKA_CONTROLLER_LISTENER_NAMES"])
        #expect(env["KAFKA_LISTENERS"]?.contains("\(controllerName)://") == true)
        #expect(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1", "one node: internal topics need replication factor 1")
        #expect(kafka.map("healthcheck")?["test"] != nil)

        // The containers' bootstrap address is one the broker advertises.
        let advertised = (env["KAFKA_ADVERTISED_LISTENERS"] ?? "").split(separator: ",").map {
            String($0.split(separator: "/").last ?? "")
        }
        for (name, service) in try Self.imageServices() {
            let bootstrap = try #require(Self.environment(service)["KAFKA_BOOTSTRAP_SERVERS"], "\(name): KAFKA_BOOTSTRAP_SERVERS")
            #expect(advertised.contains(bootstrap), "\(name): \(bootstrap) is not an advertised listener")
        }
    }

    @Test func postgresWithAHealthCheck() throws {
        let services = try Self.services()
        let postgres = try #require(services["postgres"], "no postgres service")
        #expect(postgres.string("image") == "postgres:15")
        #expect(postgres.map("healthcheck")?["test"] != nil)
        let env = Self.environment(postgres)
        // DATABASE_URL of the image's services points at this database.
        let expected = "postgresql://\(env["POSTGRES_USER"] ?? ""):\(env["POSTGRES_PASSWORD"] ?? "")@postgres:5432/\(env["POSTGRES_DB"] ?? "")"
        for (name, service) in try Self.imageServices() {
            #expect(Self.environment(service)["DATABASE_URL"] == expected, "\(name): DATABASE_URL")
        }
    }

    @Test func topicsAndMigrationsRunOnceBeforeTheService() throws {
        let services = try Self.services()
        let topicsInit = try #require(services.first { Self.command($0.value) == ["order-service", "topics", "apply"] }, "no topic step")
        #expect(Self.dependency(topicsInit.value, on: "kafka") == "service_healthy")
        let migrate = try #require(services.first { Self.command($0.value) == ["order-service", "migrate"] }, "no migration step")
        #expect(Self.dependency(migrate.value, on: "postgres") == "service_healthy")

        let runners = try Self.serviceRunners()
        #expect(!runners.isEmpty)
        for (name, service) in runners {
            #expect(Self.dependency(service, on: topicsInit.key) == "service_completed_successfully", "\(name) waits for the topics")
            #expect(Self.dependency(service, on: migrate.key) == "service_completed_successfully", "\(name) waits for the migrations")
            #expect(try ServiceConfiguration.fromEnvironment(Self.environment(service)).createTopics == false)
        }
    }

    @Test func twoOrderServiceReplicasShareTheDefaultGroup() throws {
        let runners = try Self.serviceRunners()
        let replicas = runners.values.map(Self.replicas).reduce(0, +)
        #expect(replicas == 2, "two order-service replicas")
        for (name, service) in runners {
            let config = try ServiceConfiguration.fromEnvironment(Self.environment(service))
            #expect(config.groupId == ServiceConfiguration().groupId, "\(name): group id")
            #expect(Self.environment(service)["ORDER_SERVICE_GROUP_ID"] == "order-service")
            #expect(Self.environment(service)["ORDER_SERVICE_INSTANCE_ID"] == nil || replicas == 1, "\(name): replicas need distinct instance ids")
            let test = (service.map("healthcheck")?.list("test") ?? []).compactMap(scalarString)
            #expect(test.isEmpty || Array(test.dropFirst()) == ["order-service", "health"])
        }
    }

    @Test func referenceServicesRunWithTheCatalog() throws {
        let services = try Self.services()
        for program in ["product-service", "inventory-service"] {
            let service = try #require(services.values.first { Self.command($0).first == program }, "no \(program)")
            #expect(Self.command(service) == [program, "--catalog", "/app/catalog.json"])
        }
    }

    @Test func environmentIsWhatTheProgramsRead() throws {
        var checked = 0
        for (name, service) in try Self.imageServices() {
            let env = Self.environment(service)
            if Self.isOrderService(service) {
                _ = try ServiceEnvironment.checkOrderService(env, where: "compose \(name)")
                #expect(env["ORDER_SERVICE_TOPICS_FILE"] == "/app/topics.yaml")
            } else {
                #expect(["product-service", "inventory-service"].contains(Self.command(service).first ?? ""), "compose \(name)")
                try ServiceEnvironment.checkReferenceService(env, where: "compose \(name)")
            }
            checked += 1
        }
        #expect(checked >= 5)
    }

    @Test func buildUsesTheRepositoryDockerfile() throws {
        let composeDirectory = Repo.url(Self.path).deletingLastPathComponent()
        let products = try Repo.executableProducts()
        for (name, service) in try Self.imageServices() {
            let build = try #require(service.map("build"), "\(name): build")
            let context = composeDirectory.appendingPathComponent(build.string("context") ?? ".").standardizedFileURL
            #expect(context.path == Repo.root.standardizedFileURL.path, "\(name): the build context must be the repository root")
            let dockerfile = context.appendingPathComponent(build.string("dockerfile") ?? "Dockerfile")
            #expect(FileManager.default.fileExists(atPath: dockerfile.path))
            if let program = Self.command(service).first { #expect(products.contains(program)) }
        }
    }
}
