// biflow export: rewrite a checkpoint for shipping, e.g. with half-precision weights (half the bytes).
package dev.biflow.cli;

import dev.biflow.engine.Tensor;
import dev.biflow.engine.io.Safetensors;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.Callable;

@Command(name = "export", mixinStandardHelpOptions = true, showDefaultValues = true,
        description = {"Rewrite a checkpoint (any the project writes: forward, backward, feature networks) with its float",
                "tensors stored as F16 (inference weights, half the size) or F32; metadata is kept. Every loader reads",
                "both. Training state files (optimizer moments) should stay F32."},
        footer = {"", "Example:", "  biflow export runs/fmnist-p4/model-ema.safetensors models/fmnist/forward.safetensors --dtype f16"})
final class ExportCommand implements Callable<Integer> {
    @Parameters(index = "0", description = "Checkpoint to read.") Path in;
    @Parameters(index = "1", description = "File to write (replaced atomically; must differ from the input).") Path out;
    @Option(names = "--dtype", description = "f16 or f32.") String dtype = "f16";

    @Override
    public Integer call() throws Exception {
        boolean half = switch (dtype.toLowerCase(Locale.ROOT)) {
            case "f16" -> true;
            case "f32" -> false;
            default -> throw new IllegalArgumentException("--dtype: expected f16 or f32, got '" + dtype + "'");
        };
        if (!Files.exists(in)) throw new IllegalArgumentException("checkpoint " + in + " not found");
        if (Files.exists(out) && Files.isSameFile(in, out))
            throw new IllegalArgumentException("export writes a new file: " + out + " is the input; pick another output path");
        Safetensors.Contents c = Safetensors.read(in);
        Safetensors.Builder b = Safetensors.builder();
        for (Map.Entry<String, Tensor> e : c.tensors().entrySet()) {
            // integer tensors (counters, orders) are not weights: they stay exact as F32
            if (half && !c.header().tensor(e.getKey()).dtype().isInteger()) b.f16(e.getKey(), e.getValue());
            else b.f32(e.getKey(), e.getValue());
        }
        b.metadata(c.metadata());
        if (out.toAbsolutePath().getParent() != null) Files.createDirectories(out.toAbsolutePath().getParent());
        b.write(out);
        System.out.printf(Locale.ROOT, "export: %s (%,d bytes) -> %s (%,d bytes, %s)%n", in, Files.size(in), out, Files.size(out),
                half ? "F16" : "F32");
        return 0;
    }
}
