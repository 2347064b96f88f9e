import ArgumentParser
import Dispatch
import Foundation
import Kafka
import Logging
import OrderCore

/// librdkafka's mock cluster in a process of its own, with every topic of topics.yaml (the mock
/// has no CreateTopics): a broker whose cost per request does not grow with its log, so a paced
/// run measures the service rather than the broker. Prints its bootstrap address on the first
/// line of stdout and runs until SIGTERM or SIGINT.
struct MockBroker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mock-broker",
        abstract: "Run librdkafka's mock cluster with the topics of topics.yaml until SIGTERM (prints its bootstrap address).")

    @Option(help: "topics.yaml path.") var topicsFile = "topics.yaml"
    @Option(help: "Brokers in the mock cluster.") var brokers: Int32 = 1

    func run() async throws {
        var logger = Logger(label: "mock-broker")
        logger.logLevel = .warning
        let topics = try Topics.load(path: topicsFile)
        let cluster = try KafkaMockCluster(brokers: brokers, logger: logger)
        for spec in topics.specs {
            try cluster.createTopic(spec.name, partitions: spec.partitions, replicationFactor: min(spec.replicationFactor, brokers))
        }
        // Unbuffered, so that a script reading the first line sees it at once.
        FileHandle.standardOutput.write(Data((cluster.bootstrapServers + "\n").utf8))
        await Self.waitForTermination()
        withExtendedLifetime(cluster) {}
    }

    /// Suspends until SIGTERM or SIGINT arrives.
    private static func waitForTermination() async {
        signal(SIGTERM, SIG_IGN)
        signal(SIGINT, SIG_IGN)
        let queue = DispatchQueue(label: "mock-broker-signals")
        let sources = [SIGTERM, SIGINT].map { DispatchSource.makeSignalSource(signal: $0, queue: queue) }
        let (signals, continuation) = AsyncStream<Void>.makeStream()
        for source in sources {
            source.setEventHandler { continuation.yield() }
            source.resume()
        }
        for await _ in signals { break }
        sources.forEach { $0.cancel() }
    }
}
