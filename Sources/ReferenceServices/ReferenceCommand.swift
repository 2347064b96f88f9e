import Foundation
import Kafka
import Logging
import OrderCore
import OrderTelemetry
import Postgres
import ServiceLifecycle

/// Options shared by the two reference executables.
public struct ReferenceOptions: Sendable {
    public var bootstrapServers: String
    public var databaseURL: String
    public var topicsFile: String
    public var catalogFile: String?
    public var groupId: String?

    public init(bootstrapServers: String?, databaseURL: String?, topicsFile: String?, catalogFile: String?, groupId: String?) {
        let env = ProcessInfo.processInfo.environment
        self.bootstrapServers = bootstrapServers ?? env["KAFKA_BOOTSTRAP_SERVERS"] ?? "localhost:9092"
        self.databaseURL = databaseURL ?? env["DATABASE_URL"] ?? "postgresql://orders:orders@127.0.0.1:5432/orders"
        self.topicsFile = topicsFile ?? env["ORDER_SERVICE_TOPICS_FILE"] ?? "topics.yaml"
        self.catalogFile = catalogFile ?? env["CATALOG_FILE"]
        self.groupId = groupId
    }
}

public enum ReferenceService {
    case product, inventory

    public func run(_ options: ReferenceOptions) async throws {
        JSONLogHandler.bootstrap()
        let name = self == .product ? "product-service" : "inventory-service"
        let logger = Logger(label: name)
        try LibRdKafka.requireSupportedVersion()
        let topics = try Topics.load(path: options.topicsFile)
        // KAFKA_* variables (security settings etc.) reach librdkafka as for the order service.
        let kafka = KafkaConfiguration(["bootstrap.servers": options.bootstrapServers, "client.id": name])
            .merging(ServiceConfiguration.kafkaEnvironment(ProcessInfo.processInfo.environment))
        try await TopicManager(configuration: kafka, logger: logger).ensure(topics)
        let db = PostgresClient(configuration: PostgresConfiguration(url: options.databaseURL, poolSize: 4, applicationName: name), logger: logger)
        try await ReferenceSchema.migrate(db, logger: logger)
        if let catalog = options.catalogFile {
            guard let data = FileManager.default.contents(atPath: catalog) else { throw ConfigurationError("cannot read \(catalog)") }
            let n = try await ReferenceSchema.seed(db, catalogJSON: Array(data))
            logger.info("seeded \(n) products from \(catalog)")
        }
        let responder: Responder
        switch self {
        case .product:
            let logic = ProductServiceLogic(db: db)
            responder = Responder(
                name: name, kafka: kafka, groupId: options.groupId ?? name,
                routes: [topics.productRequests: topics.productReplies], logger: logger
            ) { _, request in try await logic.details(request) }
        case .inventory:
            let logic = InventoryServiceLogic(db: db)
            responder = Responder(
                name: name, kafka: kafka, groupId: options.groupId ?? name,
                routes: [topics.inventoryCheckRequests: topics.inventoryCheckReplies, topics.deductionRequests: topics.deductionResults],
                logger: logger
            ) { record, request in
                record.topic == topics.deductionRequests ? try await logic.deduct(request) : try await logic.check(request)
            }
        }
        Telemetry.consumerGroup = options.groupId ?? name
        let telemetry = try OTelBootstrap.start(serviceName: name, logger: logger).map { [ServiceGroupConfiguration.ServiceConfiguration(service: $0)] } ?? []
        let group = ServiceGroup(
            configuration: .init(services: telemetry + [.init(service: responder)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        await db.close()
    }
}
