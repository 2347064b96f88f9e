import Logging
import ServiceLifecycle

/// The order service: `OrderServiceBuilder` makes its parts (start-up: topics, migrations, the
/// crash-loop registry, the clients), then a `ServiceGroup` runs them (`ServiceLineup`) until a
/// graceful shutdown (SIGTERM/SIGINT through the command's ServiceGroup, which this one inherits),
/// which stops them in order: stop fetching, finish in-flight records, reply, commit, leave the
/// group, send the outbox; then the clients are closed.
///
/// Start-up runs inside the service, so a signal during a long start-up (a database not up yet)
/// is caught too: the services then start and stop at once.
public final class OrderService: Service, Sendable {
    public let config: ServiceConfiguration
    private let logger: Logger

    public init(configuration: ServiceConfiguration, logger: Logger) {
        self.config = configuration
        self.logger = logger
    }

    public func run() async throws {
        let components = try await OrderServiceBuilder(config: config, logger: logger).build()
        try await ServiceGroup(configuration: ServiceGroupConfiguration(services: components.services.configurations, logger: logger)).run()
        await components.close()
        logger.info("stopped")
    }
}
