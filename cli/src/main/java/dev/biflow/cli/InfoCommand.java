// biflow info: what a checkpoint holds, without running it.
package dev.biflow.cli;

import dev.biflow.engine.io.Safetensors;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

import java.nio.file.Path;
import java.util.concurrent.Callable;

@Command(name = "info", mixinStandardHelpOptions = true, description = "Print a checkpoint's metadata, tensors and parameter count.",
        footer = {"", "Example:", "  biflow info runs/forward/model.safetensors --tensors"})
final class InfoCommand implements Callable<Integer> {
    @Parameters(index = "0", description = "A .safetensors file.") Path file;
    @Option(names = "--tensors", description = "List every tensor.") boolean tensors;

    @Override
    public Integer call() throws Exception {
        Safetensors.Header h = Safetensors.readHeader(file);
        long total = 0;
        for (var t : h.tensors()) total += t.numel();
        System.out.println(file + ": " + h.tensors().size() + " tensors, " + String.format("%,d", total) + " values");
        h.metadata().forEach((k, v) -> System.out.println("  " + k + ": " + v));
        if (tensors) for (var t : h.tensors()) System.out.println("  " + t);
        return 0;
    }
}
