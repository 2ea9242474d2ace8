// Registers `biflow spark` with the biflow command when this module's jar is on the class path.
package dev.biflow.spark;

/** Found by {@link java.util.ServiceLoader} from cli's Main (META-INF/services). */
public final class SparkPlugin implements dev.biflow.cli.Main.Plugin {
    @Override
    public Object command() { return new SparkCommand(); }
}
