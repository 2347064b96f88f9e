import Kafka
import Logging
import ServiceLifecycle

/// The group consumer as a service: subscribes and waits while the consumer pushes its records
/// to the dispatcher on its poll thread (`Options.deliver`, set by `OrderServiceBuilder`; a
/// consumer that reads `records` instead has each one offered here), and on its graceful
/// shutdown drains the dispatcher (in-flight records finish and are answered, their offsets
/// stored) and closes the consumer (commits the stored offsets, leaves the group, ends `records`).
/// That sequence runs once, whether the shutdown or the end of the consumer comes first.
struct ConsumerLoop: Service {
    /// The group consumer in use now (`TopicRecovery` may replace it).
    let consumerRef: LockedBox<KafkaConsumer?>
    let dispatcher: Dispatcher
    let subscribed: [String]
    let logger: Logger

    func run() async throws {
        guard let consumer = consumerRef.withLock({ $0 }) else { return }
        try consumer.subscribe(subscribed)
        logger.info("consuming", metadata: ["topics": "\(subscribed)"])
        let stop = OnceTask { [dispatcher, consumerRef] in
            await dispatcher.drain()
            await consumerRef.withLock { $0 }?.close()  // commits stored offsets, leaves the group, ends `records`
        }
        await withGracefulShutdownHandler {
            // Reads the group consumer's records; when it was replaced (see TopicRecovery), the
            // fresh one's.
            var reading = consumer
            while true {
                for await record in reading.records { dispatcher.offer(record) }
                guard let next = consumerRef.withLock({ $0 }), next !== reading else { break }
                reading = next
            }
        } onGracefulShutdown: { [logger] in
            logger.info("shutting down: draining in-flight records")
            stop.start()
        }
        await stop.run()
    }
}
