"""What the report says, independent of how it is written: the sections, figure captions and
notes that summary.md and index.html both render, so the two never disagree."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

# file stem -> (title, one sentence on what it shows); the order is the report's order
FIGURES = {
    "accuracy_vs_round": ("Accuracy by round",
                          "Test accuracy of each method's deployable model per round: mean over seeds, "
                          "band the 95% t-interval."),
    "accuracy_vs_time": ("Accuracy by wall time",
                         "The same accuracy against cumulative wall time (mean over seeds at each round)."),
    "memory_by_method": ("Peak memory by method",
                         "Highest measured tensor peak per method, stacked by category (from the client "
                         "with that peak), dots for each client's own peak, beside the share of the fleet "
                         "(seeds pooled) whose budget is at least each level."),
    "participation": ("Participation",
                      "Share of the fleet whose budget fits a task (eligible) and that trained and was "
                      "aggregated (took part), per round, mean over seeds (each seed has its own "
                      "fleet, so no interval is drawn)."),
    "memory_vs_accuracy": ("Memory against accuracy",
                           "Final accuracy against peak memory per method; the dotted Pareto front joins "
                           "the methods no other beats on both."),
    "neulite_stage_memory": ("NeuLite: memory per stage",
                             "Highest measured tensor peak per NeuLite stage, stacked by category."),
    "neulite_stage_accuracy": ("NeuLite: accuracy per stage",
                               "Accuracy of each model NeuLite evaluates (current stage, full model) by "
                               "round, stages shaded."),
    "time_to_target": ("Time to target accuracy",
                       "Wall time until the accuracy first reaches the target, with the speed-up against "
                       "FedAvg."),
}
SUMMARY_TEXT = (
    "Accuracy is the deployable model's test accuracy, mean ± 95% CI over seeds (Student's t; no CI "
    "with one seed); final is each seed's last recorded round. Peak memory is the maximum over all "
    "clients of the measured tensor peak (MB = 2^20 bytes). Participation is the mean over rounds "
    "and seeds of participated/devices. Time to target is the cumulative wall time at the first "
    "round reaching it; speed-up is FedAvg's time divided by the method's. Bytes are totals over "
    "rounds, mean over seeds."
)


@dataclass
class Section:
    heading: str
    text: str
    table: pd.DataFrame


@dataclass
class Page:
    title: str
    summary: Section
    notes: list[str]
    figures: list[str]  # stems of the figures rendered, in FIGURES order
    details: list[Section]  # methods, configuration, provenance
