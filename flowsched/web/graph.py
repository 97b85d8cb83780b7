"""Server-side layout of a DAG's task graph, drawn as plain SVG by the template.

Tasks are placed in columns by their longest distance from a root (so every
edge points right), then each column is reordered a few times by the mean
position of its neighbours (the barycenter heuristic) to cut crossings. It is
linear enough for a few hundred tasks and needs no JavaScript library.

Task groups are drawn closed, as one box standing for their tasks, or open, as a
frame around them (:mod:`flowsched.web.group_view` says which). Each column is
sorted so the members of an open group sit together.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from flowsched.serialization import SerializedDAG
from flowsched.web.group_view import GroupView, summary_state

NODE_HEIGHT = 28
GAP_X = 70
GAP_Y = 10
MARGIN = 16
CHAR_WIDTH = 7.2
MIN_WIDTH = 110
MAX_WIDTH = 260
SWEEPS = 4
# With open groups, room between boxes for a frame's padding and title.
GROUP_GAP_X = 110
GROUP_GAP_Y = 40
GROUP_PAD = 8
GROUP_TITLE = 16


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
    # "task", or "group" for a closed task group standing for its tasks.
    kind: str = "task"
    tooltip: str = ""
    size: int = 0  # tasks inside a closed group
    mapped: bool = False  # a mapped task (drawn with Airflow's "[ ]" mark)


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
class Frame:
    """An open task group: a titled frame around its tasks."""

    group_id: str
    label: str
    tooltip: str
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class Layout:
    width: float
    height: float
    nodes: list[Node]
    edges: list[Edge]
    frames: list[Frame] = field(default_factory=list)


def _depths(order: list[str], upstream: dict[str, list[str]]) -> dict[str, int]:
    """Longest distance from a root; an edge pointing back (possible between closed
    groups) is ignored so every node still gets a column."""
    index = {node: i for i, node in enumerate(order)}
    depth: dict[str, int] = {}
    for node in order:
        earlier = [depth[u] for u in upstream[node] if index[u] < index[node]]
        depth[node] = 1 + max(earlier, default=-1)
    return depth


def _barycenter_sweeps(
    layers: list[list[str]], upstream: dict[str, list[str]], downstream: dict[str, list[str]]
) -> None:
    """Reorder each layer in place by the mean position of its neighbours."""

    def reorder(
        layer: list[str], neighbours: dict[str, list[str]], position: dict[str, int]
    ) -> None:
        def key(item: tuple[int, str]) -> float:
            index, node = item
            placed = [position[n] for n in neighbours[node] if n in position]
            return sum(placed) / len(placed) if placed else float(index)

        layer[:] = [node for _, node in sorted(enumerate(layer), key=key)]

    for sweep in range(SWEEPS):
        forward = sweep % 2 == 0
        sequence = layers[1:] if forward else list(reversed(layers[:-1]))
        neighbours = upstream if forward else downstream
        for layer in sequence:
            position = {t: i for lay in layers if lay is not layer for i, t in enumerate(lay)}
            reorder(layer, neighbours, position)


def _keep_groups_together(layer: list[str], view: GroupView) -> None:
    """Stable-sort a layer so the members of each open group are next to each other."""
    first: dict[str, int] = {}
    for position, node in enumerate(layer):
        for group_id in view.open_groups_of(node):
            first.setdefault(group_id, position)
    keys = {
        node: (*(first[g] for g in view.open_groups_of(node)), position)
        for position, node in enumerate(layer)
    }
    layer.sort(key=lambda node: keys[node])


def _label(text: str, width: float) -> str:
    fits = int((width - 20) / CHAR_WIDTH)
    return text if len(text) <= fits else text[: max(1, fits - 1)] + "…"


def _short_name(dag: SerializedDAG, node: str) -> str:
    """A node's name without the prefix of the group it is drawn in."""
    group_id = dag.task_groups[node].parent_group_id if node in dag.task_groups else None
    if node not in dag.task_groups:
        group_id = dag.task_group_of.get(node)
    if group_id and node.startswith(group_id + "."):
        return node[len(group_id) + 1 :]
    return node


def _visible_graph(
    dag: SerializedDAG, view: GroupView
) -> tuple[list[str], dict[str, list[str]], dict[str, list[str]]]:
    """Nodes in topological order of their first task, and the edges between them."""
    order: list[str] = []
    upstream: dict[str, list[str]] = {}
    for task_id in dag.topological_order():
        node = view.shown_as(task_id)
        if node not in upstream:
            order.append(node)
            upstream[node] = []
        for source in dag.tasks[task_id].upstream:
            shown = view.shown_as(source)
            if shown != node and shown not in upstream[node]:
                upstream[node].append(shown)
    downstream: dict[str, list[str]] = {node: [] for node in order}
    for node in order:
        for source in upstream[node]:
            downstream[source].append(node)
    return order, upstream, downstream


def layout(
    dag: SerializedDAG, states: dict[str, str] | None = None, view: GroupView | None = None
) -> Layout:
    """Boxes and edge paths for every shown task or closed group; ``states`` colours them."""
    states = states or {}
    view = view or GroupView(dag, frozenset())
    order, upstream, downstream = _visible_graph(dag, view)
    if not order:
        return Layout(2 * MARGIN, 2 * MARGIN, [], [])
    depth = _depths(order, upstream)
    layers: list[list[str]] = [[] for _ in range(max(depth.values()) + 1)]
    for node in order:
        layers[depth[node]].append(node)
    _barycenter_sweeps(layers, upstream, downstream)
    frames_open = [g for g in dag.task_groups if view.is_open(g)]
    for layer in layers:
        _keep_groups_together(layer, view)

    gap_x, gap_y = (GROUP_GAP_X, GROUP_GAP_Y) if frames_open else (GAP_X, GAP_Y)
    names = {node: _short_name(dag, node) for node in order}
    longest = max(len(name) for name in names.values())
    width = min(MAX_WIDTH, max(MIN_WIDTH, longest * CHAR_WIDTH + 24))
    tallest = max(len(layer) for layer in layers)
    full_height = tallest * (NODE_HEIGHT + gap_y) - gap_y
    # Room around the drawing for the outermost frames' padding and titles.
    nesting = max((len(view.ancestors(g)) + 1 for g in frames_open), default=0)
    margin_x = MARGIN + nesting * GROUP_PAD
    margin_y = MARGIN + nesting * (GROUP_PAD + GROUP_TITLE)
    boxes: dict[str, Node] = {}
    for column, layer in enumerate(layers):
        top = margin_y + (full_height - (len(layer) * (NODE_HEIGHT + gap_y) - gap_y)) / 2
        for row, node in enumerate(layer):
            is_group = node in dag.task_groups
            members = view.members(node) if is_group else [node]
            boxes[node] = Node(
                task_id=node,
                label=_label(names[node], width),
                operator="TaskGroup" if is_group else dag.tasks[node].operator,
                x=margin_x + column * (width + gap_x),
                y=top + row * (NODE_HEIGHT + gap_y),
                width=width,
                height=NODE_HEIGHT,
                state=summary_state(states.get(t) for t in members)
                if is_group
                else states.get(node, "none"),
                kind="group" if is_group else "task",
                tooltip=dag.task_groups[node].tooltip if is_group else "",
                mapped=not is_group and dag.tasks[node].mapped is not None,
                size=len(members) if is_group else 0,
            )
    edges = []
    for node in order:
        target = boxes[node]
        for source_id in upstream[node]:
            source = boxes[source_id]
            x1, y1 = source.x + source.width, source.y + NODE_HEIGHT / 2
            x2, y2 = target.x, target.y + NODE_HEIGHT / 2
            bend = gap_x / 2
            edges.append(
                Edge(
                    source_id,
                    node,
                    f"M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} "
                    f"{x2 - bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}",
                    label=dag.edge_info.get(source_id, {}).get(node, {}).get("label", ""),
                    label_x=(x1 + x2) / 2,
                    label_y=(y1 + y2) / 2 - 3,
                )
            )
    frames = [_frame(dag, view, group_id, boxes) for group_id in frames_open]
    total_width = 2 * margin_x + len(layers) * (width + gap_x) - gap_x
    return Layout(total_width, 2 * margin_y + full_height, list(boxes.values()), edges, frames)


def _frame(dag: SerializedDAG, view: GroupView, group_id: str, boxes: dict[str, Node]) -> Frame:
    inside = [box for node, box in boxes.items() if group_id in view.open_groups_of(node)]
    depth = len(view.ancestors(group_id))
    deepest = max(
        (
            len(view.ancestors(g))
            for g in dag.task_groups
            if view.is_open(g) and group_id in view.ancestors(g)
        ),
        default=depth,
    )
    pad = GROUP_PAD * (1 + deepest - depth)
    title = GROUP_TITLE * (1 + deepest - depth)
    group = dag.task_groups[group_id]
    if not inside:  # an open group with no tasks: nothing to frame
        return Frame(group_id, group.label, group.tooltip, 0, 0, 0, 0)
    left = min(box.x for box in inside) - pad
    top = min(box.y for box in inside) - pad - title
    right = max(box.x + box.width for box in inside) + pad
    bottom = max(box.y + box.height for box in inside) + pad
    return Frame(group_id, group.label, group.tooltip, left, top, right - left, bottom - top)
