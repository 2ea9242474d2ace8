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
        footer = {"", "Examples:", "  biflow export runs/fmnist-p4/model-ema.safetensors models/fmnist/forward.safetensors --dtype f16",
                "  biflow export runs/g/backward-ema.safetensors models/fmnist/backward.safetensors --guidance-w 0.4"})
final class ExportCommand implements Callable<Integer> {
    @Parameters(index = "0", description = "Checkpoint to read.") Path in;
    @Parameters(index = "1", description = "File to write (replaced atomically; must differ from the input).") Path out;
    @Option(names = "--dtype", description = "f16 or f32.") String dtype = "f16";
    @Option(names = "--guidance-w", description = "Backward models only: record the guidance scale G samples best at (pick it with "
            + "`biflow eval --w-sweep` on other noise than you report on); eval and demo then use it for G by default.") Float guidanceW;

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
        Map<String, String> meta = new java.util.LinkedHashMap<>(c.metadata());
        if (guidanceW != null) {
            if (!dev.biflow.flow.inverse.BackwardCheckpoints.KIND.equals(meta.get(dev.biflow.flow.model.Checkpoints.KIND_KEY)))
                throw new IllegalArgumentException("--guidance-w is for BiFlow backward models; " + in + " holds a '"
                        + meta.get(dev.biflow.flow.model.Checkpoints.KIND_KEY) + "' model");
            // the model checks the scale against its CFG mode and trained range
            dev.biflow.flow.inverse.BackwardCheckpoints.read(in).model().checkGuidance(guidanceW, new int[1]);
            meta.put(dev.biflow.flow.inverse.BackwardCheckpoints.GUIDANCE_KEY, Float.toString(guidanceW));
        }
        Safetensors.Builder b = Safetensors.builder();
        for (Map.Entry<String, Tensor> e : c.tensors().entrySet()) {
            // integer tensors (counters, orders) are not weights: they stay exact as F32
            if (half && !c.header().tensor(e.getKey()).dtype().isInteger()) b.f16(e.getKey(), e.getValue());
            else b.f32(e.getKey(), e.getValue());
        }
        b.metadata(meta);
        if (out.toAbsolutePath().getParent() != null) Files.createDirectories(out.toAbsolutePath().getParent());
        b.write(out);
        System.out.printf(Locale.ROOT, "export: %s (%,d bytes) -> %s (%,d bytes, %s)%n", in, Files.size(in), out, Files.size(out),
                half ? "F16" : "F32");
        return 0;
    }
}
