"""Plotly figures of saved reports that both the dashboard and the command line draw."""
from __future__ import annotations

import plotly.graph_objects as go


def lr_plot(result: dict):
    """Plotly figure of the smoothed loss against the learning rate, the suggestion marked."""
    figure = go.Figure([go.Scatter(x=result["rates"], y=result["losses"], mode="lines", name="loss",
                                   line={"color": "#9AA5B1"}),
                        go.Scatter(x=result["rates"], y=result["smoothed"], mode="lines", name="smoothed loss",
                                   line={"color": "#D1495B", "width": 3})])
    figure.add_vline(x=result["suggestion"], line_dash="dash",
                     annotation_text=f"suggested {result['suggestion']:.1e}")
    figure.update_layout(title=f"Learning-rate finder: {result['architecture']}", xaxis_type="log",
                         xaxis_title="learning rate", yaxis_title="training loss")
    return figure
