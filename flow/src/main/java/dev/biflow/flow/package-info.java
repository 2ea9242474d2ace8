/** BiFlow-J flow. */
package dev.biflow.flow;
