"""Server-side layout of a DAG's task graph, drawn as plain SVG by the template.

Tasks are placed in columns by their longest distance from a root (so every
edge points right), then each column is reordered a few times by the mean
position of its neighbours (the barycenter heuristic) to cut crossings. It is
linear enough for a few hundred tasks and needs no JavaScript library.
"""

from __future__ import annotations

from dataclasses import dataclass

from flowsched.serialization import SerializedDAG

NODE_HEIGHT = 28
GAP_X = 70
GAP_Y = 10
MARGIN = 16
CHAR_WIDTH = 7.2
MIN_WIDTH = 110
MAX_WIDTH = 260
SWEEPS = 4


@dataclass(frozen=True)
class Node:
    task_id: str
    label: str
    operator: str
    x: float
    y: float
    width: float
    height: float
    state: str


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    path: str
    # A Label("...") set in the DAG file, drawn at the middle of the edge.
    label: str = ""
    label_x: float = 0.0
    label_y: float = 0.0


@dataclass(frozen=True)
class Layout:
    width: float
    height: float
    nodes: list[Node]
    edges: list[Edge]


def _depths(dag: SerializedDAG, order: list[str]) -> dict[str, int]:
    depth: dict[str, int] = {}
    for task_id in order:
        upstream = dag.tasks[task_id].upstream
        depth[task_id] = 1 + max((depth[u] for u in upstream), default=-1)
    return depth


def _barycenter_sweeps(
    layers: list[list[str]], upstream: dict[str, tuple[str, ...]], downstream: dict[str, list[str]]
) -> None:
    """Reorder each layer in place by the mean position of its neighbours."""

    def reorder(
        layer: list[str],
        neighbours: dict[str, list[str]] | dict[str, tuple[str, ...]],
        position: dict[str, int],
    ) -> None:
        def key(item: tuple[int, str]) -> float:
            index, task_id = item
            placed = [position[n] for n in neighbours[task_id] if n in position]
            return sum(placed) / len(placed) if placed else float(index)

        layer[:] = [task_id for _, task_id in sorted(enumerate(layer), key=key)]

    for sweep in range(SWEEPS):
        forward = sweep % 2 == 0
        sequence = layers[1:] if forward else list(reversed(layers[:-1]))
        neighbours = upstream if forward else downstream
        for layer in sequence:
            position = {t: i for lay in layers if lay is not layer for i, t in enumerate(lay)}
            reorder(layer, neighbours, position)


def _label(task_id: str, width: float) -> str:
    fits = int((width - 20) / CHAR_WIDTH)
    return task_id if len(task_id) <= fits else task_id[: max(1, fits - 1)] + "…"


def layout(dag: SerializedDAG, states: dict[str, str] | None = None) -> Layout:
    """Boxes and edge paths for every task; ``states`` colours them (task_id -> state)."""
    states = states or {}
    order = dag.topological_order()
    if not order:
        return Layout(2 * MARGIN, 2 * MARGIN, [], [])
    depth = _depths(dag, order)
    layers: list[list[str]] = [[] for _ in range(max(depth.values()) + 1)]
    for task_id in order:
        layers[depth[task_id]].append(task_id)
    upstream = {task_id: dag.tasks[task_id].upstream for task_id in order}
    _barycenter_sweeps(layers, upstream, dag.downstream)

    longest = max(len(task_id) for task_id in order)
    width = min(MAX_WIDTH, max(MIN_WIDTH, longest * CHAR_WIDTH + 24))
    tallest = max(len(layer) for layer in layers)
    full_height = tallest * (NODE_HEIGHT + GAP_Y) - GAP_Y
    boxes: dict[str, Node] = {}
    for column, layer in enumerate(layers):
        top = MARGIN + (full_height - (len(layer) * (NODE_HEIGHT + GAP_Y) - GAP_Y)) / 2
        for row, task_id in enumerate(layer):
            boxes[task_id] = Node(
                task_id=task_id,
                label=_label(task_id, width),
                operator=dag.tasks[task_id].operator,
                x=MARGIN + column * (width + GAP_X),
                y=top + row * (NODE_HEIGHT + GAP_Y),
                width=width,
                height=NODE_HEIGHT,
                state=states.get(task_id, "none"),
            )
    edges = []
    for task_id in order:
        target = boxes[task_id]
        for source_id in upstream[task_id]:
            source = boxes[source_id]
            x1, y1 = source.x + source.width, source.y + NODE_HEIGHT / 2
            x2, y2 = target.x, target.y + NODE_HEIGHT / 2
            bend = GAP_X / 2
            edges.append(
                Edge(
                    source_id,
                    task_id,
                    f"M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} "
                    f"{x2 - bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}",
                    label=dag.edge_info.get(source_id, {}).get(task_id, {}).get("label", ""),
                    label_x=(x1 + x2) / 2,
                    label_y=(y1 + y2) / 2 - 3,
                )
            )
    total_width = 2 * MARGIN + len(layers) * (width + GAP_X) - GAP_X
    return Layout(total_width, 2 * MARGIN + full_height, list(boxes.values()), edges)
