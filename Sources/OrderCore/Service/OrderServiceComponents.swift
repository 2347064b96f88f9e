import Postgres

/// What `OrderServiceBuilder` made: the running parts (`services`) and the clients they share,
/// which `close` releases once every service has ended.
struct OrderServiceComponents: Sendable {
    let services: ServiceLineup
    let upstream: UpstreamClient
    let producer: RenewingProducer
    let registry: RunRegistry
    let db: PostgresClient

    /// After a clean stop: the consumer is closed (offsets committed) and the outbox sent by then.
    func close() async {
        await upstream.close()
        await producer.close()
        await registry.deregister()
        await db.close()
    }
}
