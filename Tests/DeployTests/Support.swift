import Foundation
import OrderCore
import OrderTelemetry
import Testing
import Yams

/// Files of this repository, found relative to this source file (Tests/DeployTests/ → root).
/// The deploy tests only read files inside the repository.
enum Repo {
    static let root: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // Tests/DeployTests
        .deletingLastPathComponent()  // Tests
        .deletingLastPathComponent()  // repository root

    static func url(_ path: String) -> URL { root.appendingPathComponent(path) }

    static func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: url(path).path) }

    static func text(_ path: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: url(path).path) else {
            throw DeployTestError("cannot read \(path)")
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// Every YAML document of a file (`---` separated), as Swift values.
    static func yamlDocuments(_ path: String) throws -> [Any] {
        var sequence = try Yams.load_all(yaml: try text(path))
        var documents: [Any] = []
        while let document = sequence.next() { documents.append(document) }
        if let error = sequence.error { throw DeployTestError("\(path) is not valid YAML: \(error)") }
        return documents
    }

    static func yamlMapping(_ path: String) throws -> [String: Any] {
        let documents = try yamlDocuments(path)
        guard documents.count == 1, let mapping = documents[0] as? [String: Any] else {
            throw DeployTestError("\(path) must hold one YAML mapping")
        }
        return mapping
    }

    /// The repository's topics.yaml, parsed by the service's own parser.
    static func topics() throws -> Topics { try Topics.parse(yaml: try text("topics.yaml")) }

    /// The executable products declared in Package.swift.
    static func executableProducts() throws -> Set<String> {
        Set(try text("Package.swift").captures(of: #"\.executable\(\s*name:\s*"([^"]+)""#))
    }

    /// Names of the environment variables a source file reads as `env["NAME"]` or
    /// `environment["NAME"]`.
    static func environmentNamesRead(in path: String) throws -> Set<String> {
        Set(try text(path).captures(of: #"(?:env|environment)\["([A-Z][A-Z0-9_]*)"\]"#))
    }
}

extension Repo {
    /// Directory of the built executables: ORDER_SERVICE_BIN_DIR, else .build/debug.
    static var binDir: String {
        if let d = ProcessInfo.processInfo.environment["ORDER_SERVICE_BIN_DIR"], !d.isEmpty { return d }
        return url(".build/debug").path
    }

    /// Runs the built `order-service` with `arguments` (no broker or database needed for the
    /// subcommands tested here); its exit status and combined output. Fails, never skips, when
    /// the executable is not built.
    static func runOrderService(_ arguments: [String], timeout: Duration = .seconds(30)) throws -> (status: Int32, output: String) {
        let path = binDir + "/order-service"
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw DeployTestError("\(path) is not built (swift build; or set ORDER_SERVICE_BIN_DIR)")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment["ORDER_SERVICE_HEALTH_FILE"] = nil
        process.environment = environment
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()  // until it exits (closes the pipe)
        let deadline = ContinuousClock.now + timeout
        while process.isRunning, ContinuousClock.now < deadline { Thread.sleep(forTimeInterval: 0.01) }
        if process.isRunning {
            process.terminate()
            throw DeployTestError("order-service \(arguments.joined(separator: " ")) did not exit within \(timeout)")
        }
        return (process.terminationStatus, String(decoding: output, as: UTF8.self))
    }
}

struct DeployTestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

extension String {
    /// The first capture group of every match of `pattern`.
    func captures(of pattern: String) -> [String] {
        let regex = try! NSRegularExpression(pattern: pattern)
        let range = NSRange(startIndex..., in: self)
        return regex.matches(in: self, range: range).compactMap { match in
            Range(match.range(at: 1), in: self).map { String(self[$0]) }
        }
    }
}

/// The environment the programs of this repository read, derived from their sources.
enum ServiceEnvironment {
    /// What `order-service` reads: `env["…"]` in ServiceConfiguration.swift, LOG_LEVEL and
    /// ORDER_SERVICE_HEALTH_FILE (read by the command), the standard OTEL_* variables of
    /// `OTelEnvironment.recognised`, and any KAFKA_* variable that names a librdkafka property
    /// (checked separately with `kafkaProperties`).
    static func orderServiceNames() throws -> Set<String> {
        let fromConfiguration = try Repo.environmentNamesRead(in: "Sources/OrderCore/Config/ServiceConfiguration.swift")
        // Guards against the pattern silently matching nothing after a refactoring.
        #expect(fromConfiguration.isSuperset(of: ["KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "ORDER_SERVICE_GROUP_ID", "ORDER_SERVICE_TOPICS_FILE"]))
        return fromConfiguration.union(["LOG_LEVEL", "ORDER_SERVICE_HEALTH_FILE"]).union(OTelEnvironment.recognised)
    }

    /// What the reference services read (ReferenceCommand.swift).
    static func referenceServiceNames() throws -> Set<String> {
        let names = try Repo.environmentNamesRead(in: "Sources/ReferenceServices/ReferenceCommand.swift")
        #expect(names.isSuperset(of: ["KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "ORDER_SERVICE_TOPICS_FILE"]))
        return names.union(OTelEnvironment.recognised)
    }

    /// librdkafka properties the deployment files and docs/security.md may set through KAFKA_*
    /// variables (checked against librdkafka 2.8's property list). A misspelt variable would
    /// become an unknown property, which stops the service at start.
    static let knownKafkaProperties: Set<String> = [
        "bootstrap.servers", "client.id", "debug", "log_level",
        "security.protocol", "sasl.mechanism", "sasl.mechanisms", "sasl.username", "sasl.password",
        "sasl.oauthbearer.method", "sasl.oauthbearer.client.id", "sasl.oauthbearer.client.secret",
        "sasl.oauthbearer.token.endpoint.url", "sasl.oauthbearer.scope", "sasl.oauthbearer.extensions",
        "sasl.oauthbearer.config",
        "sasl.kerberos.service.name", "sasl.kerberos.principal", "sasl.kerberos.keytab", "sasl.kerberos.kinit.cmd",
        "ssl.ca.location", "ssl.ca.pem", "ssl.certificate.location", "ssl.certificate.pem",
        "ssl.key.location", "ssl.key.password", "ssl.key.pem", "ssl.keystore.location", "ssl.keystore.password",
        "ssl.crl.location", "ssl.endpoint.identification.algorithm", "enable.ssl.certificate.verification",
        "ssl.cipher.suites",
    ]

    /// The librdkafka properties the service derives from these KAFKA_* variables, by its own
    /// mapping (KAFKA_SASL_MECHANISM → sasl.mechanism); its own variables map to nothing.
    static func kafkaProperties(of names: some Sequence<String>) throws -> Set<String> {
        let env = Dictionary(names.filter { $0.hasPrefix("KAFKA_") }.map { ($0, "x") }, uniquingKeysWith: { a, _ in a })
        return Set(try ServiceConfiguration.fromEnvironment(env).kafka.properties.keys)
    }

    /// Checks that every variable is one `order-service` reads, that its KAFKA_* variables are
    /// librdkafka properties, and that the service accepts the values (numbers, booleans).
    static func checkOrderService(_ env: [String: String], where place: String) throws -> ServiceConfiguration {
        let allowed = try orderServiceNames()
        for name in env.keys.sorted() where !name.hasPrefix("KAFKA_") {
            #expect(allowed.contains(name), "\(place): order-service does not read \(name)")
        }
        for property in try kafkaProperties(of: env.keys).sorted() {
            #expect(knownKafkaProperties.contains(property), "\(place): KAFKA_* variable maps to '\(property)', not a known librdkafka property")
        }
        for name in env.keys where name.hasPrefix("KAFKA_") {
            let ownButIgnored: Set<String> = ["KAFKA_PORT", "KAFKA_HOME", "KAFKA_OPTS", "KAFKA_HEAP_OPTS", "KAFKA_JMX_OPTS", "KAFKA_LOG4J_OPTS"]
            #expect(!ownButIgnored.contains(name), "\(place): \(name) does nothing for order-service")
        }
        return try ServiceConfiguration.fromEnvironment(env)
    }

    static func checkReferenceService(_ env: [String: String], where place: String) throws {
        let allowed = try referenceServiceNames()
        for name in env.keys.sorted() {
            #expect(allowed.contains(name), "\(place): the reference services do not read \(name)")
        }
    }
}

/// Helpers for untyped YAML values.
extension Dictionary where Key == String, Value == Any {
    func map(_ key: String) -> [String: Any]? { self[key] as? [String: Any] }
    func list(_ key: String) -> [Any]? { self[key] as? [Any] }
    func string(_ key: String) -> String? { self[key].flatMap(scalarString) }
}

/// A YAML scalar as the text a program would see (compose and Kubernetes pass strings).
func scalarString(_ value: Any) -> String? {
    switch value {
    case let s as String: return s
    case let b as Bool: return b ? "true" : "false"
    case let i as Int: return String(i)
    case let d as Double: return String(d)
    default: return nil
    }
}

/// All values stored under `key` anywhere inside a YAML value.
func values(forKey key: String, in value: Any) -> [Any] {
    var found: [Any] = []
    if let mapping = value as? [String: Any] {
        for (k, v) in mapping {
            if k == key { found.append(v) }
            found += values(forKey: key, in: v)
        }
    } else if let list = value as? [Any] {
        for v in list { found += values(forKey: key, in: v) }
    }
    return found
}
