import ArgumentParser

/// `order-bench`: the load generator (the default subcommand, `run`) and a stand-alone mock
/// cluster to run it against (`mock-broker`).
@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "order-bench",
        abstract: "Benchmark the order service over Kafka (run it against the local stack with deploy/local/bench.sh).",
        subcommands: [LoadRun.self, MockBroker.self], defaultSubcommand: LoadRun.self)
}
