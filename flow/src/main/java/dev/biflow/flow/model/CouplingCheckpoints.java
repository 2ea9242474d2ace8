// Saving and loading coupling flows as safetensors files that carry their own config.
package dev.biflow.flow.model;

import dev.biflow.engine.Rng;
import dev.biflow.engine.Tensor;
import dev.biflow.engine.io.Safetensors;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The same file layout as {@link Checkpoints}: the state dict by name, the config as JSON under
 * metadata {@code config}, and {@code kind = coupling}, so a TARFlow loader refuses a coupling
 * file (and this one a TARFlow file) with a message instead of a shape error.
 */
public final class CouplingCheckpoints {
    private CouplingCheckpoints() {}

    public static final String KIND = "coupling";

    /** Writes the flow's state dict, config and any extra metadata, atomically. */
    public static void save(CouplingFlow flow, Path path, Map<String, String> extra) throws IOException {
        Map<String, String> meta = new LinkedHashMap<>();
        if (extra != null) meta.putAll(extra);
        meta.put(Checkpoints.CONFIG_KEY, flow.config.toJson());
        meta.put(Checkpoints.KIND_KEY, KIND);
        Safetensors.write(path, flow.stateDict(), meta);
    }

    /** Loads a coupling flow whose config is in the file's metadata. Errors name the file and what is wrong. */
    public static CouplingFlow load(Path path) throws IOException {
        if (!Files.exists(path))
            throw new IOException("checkpoint " + path + " does not exist; check the path");
        Safetensors.Contents c = Safetensors.read(path);
        String kind = c.metadata().get(Checkpoints.KIND_KEY);
        if (!KIND.equals(kind))
            throw new IllegalArgumentException(path + " holds " + (kind == null ? "a model of unknown kind" : "a '" + kind + "' model")
                    + ", not a coupling flow");
        String json = c.metadata().get(Checkpoints.CONFIG_KEY);
        if (json == null) throw new IllegalArgumentException(path + " has no 'config' metadata; it was not written by CouplingCheckpoints.save");
        CouplingFlow.Config cfg = CouplingFlow.Config.fromJson(json);
        CouplingFlow flow = new CouplingFlow(cfg, new Rng(0));
        Map<String, Tensor> state = new LinkedHashMap<>(c.tensors());
        try {
            flow.loadStateDict(state, true);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(path + " does not fit the coupling config " + cfg.toJson() + ": " + e.getMessage(), e);
        }
        Checkpoints.checkFinite(path, state);
        return flow;
    }
}
