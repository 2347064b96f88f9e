import Foundation
import Testing

/// deploy/docker/Dockerfile, parsed into instructions (never built here: no Docker engine).
@Suite(.timeLimit(.minutes(1)))
struct DockerfileTests {
    struct Instruction {
        var keyword: String
        var arguments: String
    }

    /// Instructions with continuation lines joined and comments dropped.
    static func instructions() throws -> [Instruction] {
        var result: [Instruction] = []
        var pending = ""
        for rawLine in try Repo.text("deploy/docker/Dockerfile").split(separator: "\n", omittingEmptySubsequences: false) {
            let line = rawLine.trimmingCharacters(in: .whitespaces)
            if line.hasPrefix("#") || (line.isEmpty && pending.isEmpty) { continue }
            if line.hasSuffix("\\") {
                pending += line.dropLast() + " "
                continue
            }
            let full = (pending + line).trimmingCharacters(in: .whitespaces)
            pending = ""
            guard !full.isEmpty else { continue }
            let parts = full.split(separator: " ", maxSplits: 1).map(String.init)
            result.append(Instruction(keyword: parts[0].uppercased(), arguments: parts.count > 1 ? parts[1] : ""))
        }
        #expect(pending.isEmpty, "the Dockerfile ends inside a continued line")
        return result
    }

    /// The JSON (exec) form of CMD/ENTRYPOINT, or the shell form split on spaces.
    static func execForm(_ arguments: String) -> [String] {
        if let data = arguments.data(using: .utf8), let list = try? JSONSerialization.jsonObject(with: data) as? [String] {
            return list
        }
        return arguments.split(separator: " ").map(String.init)
    }

    /// Default values of the global ARGs (before the first FROM).
    static func globalArguments(_ instructions: [Instruction]) -> [String: String] {
        var args: [String: String] = [:]
        for i in instructions.prefix(while: { $0.keyword != "FROM" }) where i.keyword == "ARG" {
            let parts = i.arguments.split(separator: "=", maxSplits: 1).map(String.init)
            args[parts[0]] = parts.count > 1 ? parts[1] : ""
        }
        return args
    }

    /// Images of the FROM lines with global ARGs substituted.
    static func stageImages(_ instructions: [Instruction]) -> [String] {
        let args = globalArguments(instructions)
        return instructions.filter { $0.keyword == "FROM" }.map { from in
            var image = String(from.arguments.split(separator: " ").first { !$0.hasPrefix("--") } ?? "")
            for (name, value) in args {
                image = image.replacingOccurrences(of: "${\(name)}", with: value).replacingOccurrences(of: "$\(name)", with: value)
            }
            return image
        }
    }

    @Test func multiStageReleaseBuild() throws {
        let instructions = try Self.instructions()
        let images = Self.stageImages(instructions)
        #expect(images.count >= 2, "a build stage and a runtime stage")
        let build = try #require(images.first)
        #expect(build.hasPrefix("swift:6."), "build stage on a Swift 6 toolchain image: \(build)")
        // swift-log and swift-service-lifecycle need Swift tools 6.2 or newer.
        let minor = Int(build.dropFirst("swift:6.".count).prefix { $0.isNumber }) ?? 0
        #expect(minor >= 2, "Swift 6.2 or newer: \(build)")
        let runtime = try #require(images.last)
        #expect(runtime.hasPrefix("debian:bookworm-slim") || runtime.hasPrefix("swift:6.") && runtime.contains("slim"))

        let runs = instructions.filter { $0.keyword == "RUN" }.map(\.arguments)
        let swiftBuild = try #require(runs.first { $0.contains("swift build") }, "no swift build")
        // Every `swift build` invocation (up to its `;` or `&&`) builds release with a static runtime.
        let invocations = runs.flatMap { $0.captures(of: #"(swift build[^;&]*)"#) }
        #expect(invocations.count >= 2)
        for invocation in invocations {
            #expect(invocation.contains("-c release"), "\(invocation)")
            #expect(invocation.contains("--static-swift-stdlib"), "\(invocation)")
        }
        #expect(runs.contains { $0.contains("make -C src install") }, "builds librdkafka")
        #expect(runs.contains { $0.contains("ldconfig") })

        // The products it builds are the package's service executables.
        let products = try Repo.executableProducts()
        let built = Set(swiftBuild.captures(of: #"for product in ([a-z\- ]+);"#).flatMap { $0.split(separator: " ").map(String.init) })
        #expect(built == ["order-service", "product-service", "inventory-service"])
        #expect(built.isSubset(of: products))
    }

    @Test func runtimeImageDefaultsToTheOrderService() throws {
        let instructions = try Self.instructions()
        let runtime = Array(instructions.reversed().prefix { $0.keyword != "FROM" }.reversed())  // the last stage
        let command = try #require(runtime.last { $0.keyword == "CMD" || $0.keyword == "ENTRYPOINT" }, "no CMD/ENTRYPOINT")
        let program = try #require(Self.execForm(command.arguments).first)
        #expect(try Repo.executableProducts().contains(program), "\(program) is not an executable product of Package.swift")
        #expect(program == "order-service")

        let user = try #require(runtime.last { $0.keyword == "USER" }, "runs as root")
        #expect(!["root", "0", "0:0"].contains(user.arguments.trimmingCharacters(in: .whitespaces)))
        #expect(runtime.last { $0.keyword == "WORKDIR" }?.arguments == "/app")

        let copies = runtime.filter { $0.keyword == "COPY" }.map(\.arguments)
        #expect(copies.contains("topics.yaml /app/topics.yaml"))
        #expect(copies.contains("deploy/local/catalog.json /app/catalog.json"))
        #expect(copies.contains { $0.hasPrefix("--from=") && $0.hasSuffix("/usr/local/lib/") }, "librdkafka into /usr/local/lib")
        #expect(runtime.contains { $0.keyword == "RUN" && $0.arguments.contains("libpq5") })
        #expect(runtime.contains { $0.keyword == "RUN" && $0.arguments.contains("ldconfig") })
    }

    @Test func copiedSourcesExistInTheRepository() throws {
        for copy in try Self.instructions().filter({ $0.keyword == "COPY" || $0.keyword == "ADD" }) {
            let words = copy.arguments.split(separator: " ").map(String.init).filter { !$0.hasPrefix("--") }
            if copy.arguments.hasPrefix("--from=") { continue }
            for source in words.dropLast() where !source.contains("[") && !source.contains("*") {
                #expect(Repo.exists(source), "COPY source \(source) is not in the repository")
            }
        }
        #expect(Repo.exists("deploy/docker/README.md"))
        // Built from the repository root: the context argument is `.`.
        let readme = try Repo.text("deploy/docker/README.md")
        #expect(!readme.captures(of: #"(docker build -f deploy/docker/Dockerfile[^\n]* \.)\n"#).isEmpty)
    }
}
