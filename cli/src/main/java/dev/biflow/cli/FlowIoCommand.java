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

    @Override
    public Integer call() throws Exception {
        common.apply();
        TarFlow m = Checkpoints.loadTarFlow(model);
        Safetensors.Contents in = Safetensors.read(input);
        int[] y = null;
        if (in.tensors().containsKey("y")) {
            float[] yv = in.tensor("y").data();
            y = new int[yv.length];
            for (int i = 0; i < yv.length; i++) y[i] = Math.round(yv[i]);
        }
        Map<String, Tensor> out = new LinkedHashMap<>();
        switch (direction) {
            case "forward" -> {
                Tensor x = need(in, xKey);
                try (var ng = Grad.noGrad()) {
                    TarFlow.Forward f = m.forward(x, y);
                    out.put("z", f.z());
                    out.put("logdet", f.logdet());
                    for (int i = 0; i < f.outputs().size(); i++) out.put("block_out." + i, f.outputs().get(i));
                }
            }
            case "reverse" -> out.put("x", m.reverse(need(in, zKey), y, new TarFlow.Guidance(guidance, false, 1f)));
            default -> throw new IllegalArgumentException("direction must be 'forward' or 'reverse', got '" + direction + "'");
        }
        Safetensors.write(output, out, Map.of("source", "biflow flow " + direction));
        System.out.println("flow " + direction + ": wrote " + String.join(", ", out.keySet()) + " to " + output);
        return 0;
    }

    private Tensor need(Safetensors.Contents in, String key) {
        Tensor t = in.tensors().get(key);
        if (t == null)
            throw new IllegalArgumentException(input + " has no tensor '" + key + "' (it has " + in.tensors().keySet() + "); name it with --x-key/--z-key");
        return t;
    }
}
