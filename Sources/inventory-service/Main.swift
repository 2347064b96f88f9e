import ArgumentParser
import ReferenceServices

@main
struct Main: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inventory-service",
        abstract: "Reference Inventory Service speaking the order service's contract (section 5), for local runs and tests.",
        discussion: "Environment: KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL, ORDER_SERVICE_TOPICS_FILE, CATALOG_FILE.")

    @Option(help: "Kafka bootstrap servers.") var bootstrapServers: String?
    @Option(help: "PostgreSQL URL.") var databaseURL: String?
    @Option(help: "topics.yaml path.") var topicsFile: String?
    @Option(help: "Catalog JSON to seed products and stock from.") var catalog: String?
    @Option(help: "Consumer group id (default: the service name).") var groupId: String?

    func run() async throws {
        try await ReferenceService.inventory.run(
            ReferenceOptions(bootstrapServers: bootstrapServers, databaseURL: databaseURL, topicsFile: topicsFile, catalogFile: catalog, groupId: groupId))
    }
}
