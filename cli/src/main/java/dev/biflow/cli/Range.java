// The valid range of a numeric option, checked for every command before it runs (OptionCheck).
package dev.biflow.cli;

import java.lang.annotation.ElementType;
import java.lang.annotation.Retention;
import java.lang.annotation.RetentionPolicy;
import java.lang.annotation.Target;

/**
 * Put beside {@code @Option} on a numeric field: values outside [min, max] (or the open ends the
 * flags ask for) are refused with a one-line error naming the option, the value and the range.
 * Floating-point options must be finite whether or not they carry a Range.
 */
@Retention(RetentionPolicy.RUNTIME)
@Target(ElementType.FIELD)
@interface Range {
    double min() default Double.NEGATIVE_INFINITY;

    double max() default Double.POSITIVE_INFINITY;

    boolean minOpen() default false;

    boolean maxOpen() default false;
}
