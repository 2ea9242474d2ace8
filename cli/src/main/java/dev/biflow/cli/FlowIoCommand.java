// biflow forward / reverse: run a forward flow on tensors from a safetensors file, for checks from outside.
package dev.biflow.cli;

import dev.biflow.engine.Grad;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.io.Safetensors;
import dev.biflow.flow.model.Checkpoints;
import dev.biflow.flow.model.TarFlow;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.Callable;

@Command(name = "flow", mixinStandardHelpOptions = true, showDefaultValues = true, sortOptions = false,
        description = {"Run a forward-model checkpoint on a safetensors tensor file.",
                "forward: images 'x' (B,C,H,W) [+ labels 'y'] -> 'z' (B,T,Cp^2), 'logdet' (B,), 'block_out.i'",
                "reverse: noise 'z' (B,T,Cp^2) [+ labels 'y'] -> 'x' (B,C,H,W) by the exact inverse"},
        footer = {"", "Examples:",
                "  biflow flow forward --model model.safetensors --input io.safetensors --output z.safetensors",
                "  biflow flow reverse --model model.safetensors --input z.safetensors --output x.safetensors --guidance 1"})
final class FlowIoCommand implements Callable<Integer> {
    @Mixin Common common;
    @Parameters(index = "0", description = "forward | reverse") String direction;
    @Option(names = "--model", required = true, description = "Forward-model checkpoint.") Path model;
    @Option(names = "--input", required = true, description = "Safetensors file with the input tensor(s).") Path input;
    @Option(names = "--output", required = true, description = "Safetensors file to write.") Path output;
    @Option(names = "--x-key", description = "Input tensor name for forward.") String xKey = "x";
    @Option(names = "--z-key", description = "Input tensor name for reverse.") String zKey = "z";
    @Range(min = 0) @Option(names = "--guidance", description = "Guidance scale for reverse.") float guidance = 0;

    @Range(min = 1) @Option(names = "--batch", description = "Images run together: the input is read and the output written batch by batch, so any input size works in bounded memory.") int batch = 256;

    @Override
    public Integer call() throws Exception {
        common.apply();
        if (!direction.equals("forward") && !direction.equals("reverse"))
            throw new IllegalArgumentException("direction must be 'forward' or 'reverse', got '" + direction + "'");
        TarFlow m = Checkpoints.loadTarFlow(model);
        var c = m.config;
        boolean fwd = direction.equals("forward");
        String key = fwd ? xKey : zKey;
        Safetensors.Header h = Safetensors.readHeader(input);
        if (!h.names().contains(key))
            throw new IllegalArgumentException(input + " has no tensor '" + key + "' (it has " + h.names() + "); name it with --x-key/--z-key");
        int[] shape = h.tensor(key).shape();
        int[] row = fwd ? new int[]{c.inChannels(), c.imgSize(), c.imgSize()} : new int[]{c.tokens(), c.tokenDim()};
        if (shape.length != row.length + 1 || !java.util.Arrays.equals(java.util.Arrays.copyOfRange(shape, 1, shape.length), row))
            throw new IllegalArgumentException(input + ": tensor '" + key + "' has shape " + java.util.Arrays.toString(shape) + "; the model "
                    + direction + " takes (B, " + java.util.Arrays.toString(row).replaceAll("[\\[\\]]", "") + ")");
        int n = shape[0];
        boolean labelled = h.names().contains("y");
        if (labelled && h.tensor("y").numel() != n)
            throw new IllegalArgumentException(input + ": labels 'y' hold " + h.tensor("y").numel() + " values for " + n + " inputs");
        if (n == 0) throw new IllegalArgumentException(input + ": tensor '" + key + "' holds no " + (fwd ? "images" : "noise rows"));
        Safetensors.RowWriter w = null;
        java.util.List<String> names = new java.util.ArrayList<>();
        try {
            for (int i = 0; i < n; i += batch) {
                int b = Math.min(batch, n - i);
                int[] y = null;
                if (labelled) {
                    float[] yv = Safetensors.readRows(input, "y", i, b).data();
                    y = new int[b];
                    for (int j = 0; j < b; j++) y[j] = Math.round(yv[j]);
                }
                Tensor in = Safetensors.readRows(input, key, i, b);
                Map<String, Tensor> out = new LinkedHashMap<>();
                if (fwd) {
                    try (var ng = Grad.noGrad()) {
                        TarFlow.Forward f = m.forward(in, y);
                        out.put("z", f.z());
                        out.put("logdet", f.logdet());
                        for (int k = 0; k < f.outputs().size(); k++) out.put("block_out." + k, f.outputs().get(k));
                    }
                } else {
                    out.put("x", m.reverse(in, y, new TarFlow.Guidance(guidance, false, 1f)));
                }
                if (w == null) { // the output's shapes: the first batch's, with n rows
                    LinkedHashMap<String, int[]> shapes = new LinkedHashMap<>();
                    out.forEach((k, t) -> {
                        int[] s = t.shape();
                        s[0] = n;
                        shapes.put(k, s);
                    });
                    w = Safetensors.rowWriter(output, shapes, Map.of("source", "biflow flow " + direction));
                    names.addAll(shapes.keySet());
                }
                for (var e : out.entrySet()) w.put(e.getKey(), i, e.getValue());
            }
            w.commit();
            System.out.println("flow " + direction + ": wrote " + n + " rows of " + String.join(", ", names) + " to " + output);
        } finally {
            if (w != null) w.close();
        }
        return 0;
    }
}
